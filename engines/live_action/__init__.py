"""Live-Action: a drawn character made photoreal with SD 1.5 img2img and depth + pose ControlNets.

    request.py      LiveActionRequest and check(): every bad value, picture or model as one sentence
    source.py       the picture read into 8-bit RGB(A) whatever its kind; the working size; ready maps
    photoreal.py    make_live_action(): the numbered steps, from the picture to the saved result
    controlnets.py  the ControlNets in the pool (id, folder or single file), beside the pooled checkpoint
    depth.py        the depth estimator (transformers: Depth Anything, DPT)
    pose.py         the pose estimator (transformers ViTPose), its keypoints in the picture's pixels
    openpose_draw.py  the 18-point OpenPose skeleton drawn as the openpose ControlNet was trained on
    edges.py        Canny edges for the optional third ControlNet
    background.py   transparent, black or scenic background: flattened, masked and restored
    colour.py       CIELAB colour transfer from the drawing, masked to the character
    metrics.py      the realism report: edge fidelity, colour drift, texture entropy
    output.py       the PNG with A1111's parameters, the JSON report, the control maps
    batch.py        a folder at a time; a bad file is skipped and reported
    cli.py          `python app.py live-action`

The pipeline is derived per job from the pooled SD 1.5 checkpoint (engines/sd15/checkpoint.py), so the
UNet, VAE and text encoder are shared with Text-to-Manga; only the ControlNets and estimators are its own.
Nothing heavy is imported with this package.
"""
