#!/usr/bin/env bash
# Source on the device machine: installs this checkout (no network there) into its python.
set -e
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/tmp/pip-install.log 2>&1 \
  || { cat /tmp/pip-install.log; exit 1; }
python3 -c "import poetx_bench.reference, torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
