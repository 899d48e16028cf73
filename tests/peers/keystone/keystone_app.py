# WSGI entry for gunicorn. keystone parses sys.argv when imported, and gunicorn's own
# arguments make it fail (the worker then respawns forever): hide them first.
import sys

sys.argv = [sys.argv[0]]
from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
