"""Animation: a character animated with AnimateDiff, text-to-video or from a still, keeping who it is.

    request.py        AnimationRequest and check(): every bad value, still or model as one sentence
    prompt_travel.py  sd-webui-animatediff's prompt travel: a head, ``0: ...``, ``16: ...``, a tail
    animate.py        make_animation(): the numbered steps, from the request to the saved video
    motion.py         the motion adapter and SparseCtrl in the pool; the motion UNet built of the pooled
                      checkpoint's layers (nothing copied); FreeNoise blocks and motion LoRAs per job
    consistency.py    the temporal consistency score: stability between frames, identity against the still
    video_io.py       MP4 / WebM (ffmpeg through imageio-ffmpeg), GIF / WebP (Pillow), PNG frames; reading back
    output.py         the video, its sidecar JSON, frame 0, the frames on request
    cli.py            `python app.py animate`

The pipeline is derived per job from the pooled SD 1.5 checkpoint (engines/sd15/checkpoint.py), so the
UNet, VAE and text encoder are the ones Text-to-Manga and Live-Action use; only the motion adapter (and
SparseCtrl) are Animation's own. Nothing heavy is imported with this package.
"""
