"""A short session with QEMU's own Python QMP library (qemu.qmp), printing what it sees.

Usage: qmp_client.py SOCKET. Run by tests/monitor_qmp_clients.rs against vmscope and QEMU.
"""
import asyncio
import sys

from qemu.qmp import EventListener, ExecuteError, QMPClient


async def main(path):
    qmp = QMPClient("probe")
    await qmp.connect(path)
    greeting = qmp.greeting._asdict()["QMP"]
    version = greeting["version"]["qemu"]
    print("version", version["major"], version["minor"])
    print("capabilities", greeting["capabilities"])
    for command, args in [
        ("query-status", None),
        ("query-name", None),
        ("query-kvm", None),
        ("human-monitor-command", {"command-line": "info status"}),
        ("stop", None),
    ]:
        print(command, await qmp.execute(command, args))
    for command, args in [("nope", None), ("query-status", {"x": 1})]:
        try:
            await qmp.execute(command, args)
        except ExecuteError as e:
            print(command, "error", e.error_class, str(e))
    listener = EventListener()
    with qmp.listen(listener):
        print("quit", await qmp.execute("quit"))
        event = await listener.get()
    print("event", event["event"], event.get("data"))
    try:
        await qmp.disconnect()
    except EOFError:
        # The server closed first, as it does after quit.
        pass

asyncio.run(main(sys.argv[1]))
