"""The Worker's main module, uploaded at the bundle root as ``worker.py`` (``bundle.MAIN_MODULE``).

Nothing but the entry class: the runtime imports the main module by its own name (``worker``)
and serves the ``WorkerEntrypoint`` subclass named ``Default`` it finds in that module's
namespace, so importing the class here is what makes ``handler.entry.Default`` the Worker.
The main module must sit at the bundle root; the rest of the Worker stays the ``handler``
package beside it (``handler.bundle`` says why and checks it).
"""

from handler.entry import Default

__all__ = ["Default"]
