"""The one GPU queue of the UI."""

# Every event that touches the GPU passes this concurrency group, so the UI runs one GPU job
# at a time in arrival order; the HardwareManager's lock then orders the UI against the CLI.
GPU_QUEUE = {"concurrency_id": "gpu", "concurrency_limit": 1}
