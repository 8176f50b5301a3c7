"""When this process started, in epoch seconds, to about 10 ms (start-up breakdowns).

psutil's create_time() adds the process's start (in clock ticks since boot) to the boot time
of /proc/stat, which is a whole second: its error reaches 1 s, the size of the phases being
measured. This takes the process's age from /proc/uptime instead (10 ms resolution) and
subtracts it from now.
"""

from __future__ import annotations

import os
import time


def process_start(pid: int | str = "self") -> float | None:
    """Epoch seconds at which `pid` (default: this process) started; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        now = time.time()
        # Field 22 (starttime, in clock ticks), counted after the ')' that ends field 2.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return now - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
