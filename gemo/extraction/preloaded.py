"""Imported last by the workers' fork server, once it has imported everything else.

It freezes the objects made so far (``gc.freeze()``), as Python's documentation
advises before forking: the workers' garbage collector then never walks the hundreds
of thousands of objects torch and the other libraries made at import (nor writes to
their pages, which stay shared with the server), and the server's own exit no longer
collects them one by one (2 s of a core after every run).
"""

import gc

gc.freeze()
