"""Run the dispatcher from Python: build a mitmproxy master, add `Dispatcher`, serve.

    python example/scripted.py --config config.yaml --port 5000 --reverse http://127.0.0.1:8081

This is what to start from when the sidecar is embedded in a larger Python program. It needs
the package installed (`pip install .`); the mitmdump script is not involved.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from mitmproxy import exceptions, options
from mitmproxy.tools.dump import DumpMaster

from sidecar_dispatcher import Dispatcher


async def serve(config: str, port: int, reverse: str, listen_host: str) -> int:
    opts = options.Options(mode=[f"reverse:{reverse}@{port}"], listen_host=listen_host)
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    master.addons.add(Dispatcher())  # declares the dispatcher_config option
    try:
        # Reads the config now: a bad one stops us here, before anything listens.
        master.options.update(dispatcher_config=config)
    except exceptions.OptionsError as e:
        print(f"scripted dispatcher: {e}", file=sys.stderr)
        return 1

    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, master.shutdown)
    await master.run()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml", help="dispatcher config (YAML)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--listen-host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--reverse", default="http://127.0.0.1:8081", help="reverse-mode target URL"
    )
    arguments = parser.parse_args()
    sys.exit(
        asyncio.run(
            serve(arguments.config, arguments.port, arguments.reverse, arguments.listen_host)
        )
    )


if __name__ == "__main__":
    main()
