"""mitmproxy script: dispatch each request by its key header, as configured in YAML.

    mitmdump --mode reverse:http://127.0.0.1:8081@5000 -s addons/dispatcher.py
    mitmdump ... -s addons/dispatcher.py --set dispatcher_config=/path/config.yaml

mitmproxy puts this file's folder on sys.path while loading it, so the package beside it is
used even when it is not installed.
"""

from sidecar_dispatcher import Dispatcher

addons = [Dispatcher()]
