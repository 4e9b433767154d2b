"""`python -m server.jsonrpc`: the JSON-RPC engine over stdio."""

import sys

from server.jsonrpc.main import main

sys.exit(main())
