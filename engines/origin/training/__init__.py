"""Training an Origin model: ``trainer.train(TrainRequest(data, run), ctx)``, and ``app.py train``.

    request.py           TrainRequest, its checks, and the config a run resolves to
    trainer.py           the Trainer: the numbered steps of a run, one method each
    optimizer_step.py    one optimizer step: out-of-memory recovery, NaN guard, update, what it records
    forward_backward.py  one step's arithmetic: the randomness it draws, its forward and backward passes
    checkpointing.py     writing and reading the training state inside a checkpoint
    data.py, cache.py    the artist's images as samples, and the two-tier tensor cache
    losses.py            the diffusion loss (Min-SNR) and the art losses
    lr_control.py        warm-up, cosine decay and the adaptive LR controller
    run_logs.py          metrics.jsonl, TensorBoard and the four logs
    samples.py           sample images during training
    diagnosis.py         per-component health checks
    validation.py        the validation loss: fixed images, timesteps and noise
    run_control.py       the run folder as a protocol: status.json, control flags, the training queue
    runs.py              every run judged from its folder (running, crashed...); start, steer, resume
    metrics_tail.py, monitor.py   metrics.jsonl read as it grows, downsampled series, ETA
    chart.py, dashboard.py        the 3x3 progress chart (PNG) and ``--dashboard`` in a terminal
    search.py            ``--search N``: hyperparameter trials
    sr_stage.py          ``--stage sr``: the super-resolution enhancer
    cli.py               ``app.py train``
"""
