"""Executes Jupyter notebooks on the Deno kernel headlessly; used by `deno task notebooks`.

Stock nbclient stops listening when the kernel reports a cell idle, and the
Deno kernel sends some results ~1 ms after that, so outputs go missing. This
client waits briefly after each cell before moving on.
Usage: run.py OUT_DIR NOTEBOOK [NOTEBOOK ...]; exit 1 if any cell fails.
"""
import os
import queue
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


OUTPUT_TYPES = {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}


class PatientClient(NotebookClient):
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        time.sleep(0.1)
        # Drain messages that arrived after the idle status.
        while True:
            try:
                msg = await self.kc.iopub_channel.get_msg(timeout=0.05)
            except queue.Empty:
                break  # nothing more arrived: the cell's output is complete
            # Only outputs arrive late; status and execute_input messages of the finished cell are done with.
            if msg.get("msg_type") not in OUTPUT_TYPES:
                continue
            if msg.get("parent_header", {}).get("msg_id") is not None:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionError:
                    raise
                except Exception as e:  # a late message nbclient cannot place; the cell itself succeeded
                    print(f"note: ignored a late kernel message ({type(e).__name__}: {e})", file=sys.stderr)
        return result


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    failed = 0
    for path in sys.argv[2:]:
        nb = nbformat.read(path, as_version=4)
        client = PatientClient(
            nb,
            timeout=int(os.environ.get("NOTEBOOK_CELL_TIMEOUT", "600")),
            kernel_name="deno",
            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
        )
        start = time.time()
        status = "ok"
        try:
            client.execute()
        except CellExecutionError as e:
            failed += 1
            status = "FAILED"
            print(str(e)[-4000:], file=sys.stderr)
        except Exception as e:  # kernel died, timeout ...
            failed += 1
            status = f"FAILED ({type(e).__name__}: {e})"
        out = os.path.join(out_dir, os.path.basename(path))
        nbformat.write(nb, out)
        print(f"notebook {os.path.basename(path)} ... {status} ({time.time() - start:.1f} s)", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
