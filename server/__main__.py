"""`python -m server`: the JSON-RPC engine over stdio (what the editor launches)."""

import sys

from server.jsonrpc.main import main

sys.exit(main())
