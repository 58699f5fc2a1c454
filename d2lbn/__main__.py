"""``python -m d2lbn``: say where Fashion-MNIST is found, with its checksums verified, or how to get it.

Exit status 0 when a verified copy is found, 1 when none is (the message lists the three ways
to get the data), 2 when the copy found is corrupt. Nothing is downloaded. See
:func:`d2lbn.data.main`.
"""

import sys

from d2lbn.data import main

if __name__ == "__main__":
    sys.exit(main())
