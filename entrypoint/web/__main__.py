import sys

from entrypoint.web.server import main

sys.exit(main())
