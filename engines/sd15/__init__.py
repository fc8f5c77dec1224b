"""The Stable Diffusion 1.5 family: checkpoint, LoRAs, embeddings, clip skip, A1111 prompts and PNG parameters.

    checkpoint.py     Sd15Models: one checkpoint (+ VAE) in the pool; LoRAs and embeddings fitted per job
    library.py        what is on disk: checkpoints in models/, models/loras/, models/embeddings/
    prompt_syntax.py  A1111's prompt grammar: (word:1.2), (word), [word], BREAK, <lora:name:w>
    conditioning.py   weighted 75-token chunks through CLIP with clip skip, as A1111 encodes them
    samplers.py       "DPM++ 2M Karras" and the other names artists know -> diffusers schedulers
    request.py        Sd15Request and check(): every bad value as one sentence before loading
    txt2img.py        generate(): text to pictures, batches, hires fix, live previews, PNGs with parameters
    preview.py        the cheap latent -> RGB preview
    a1111_text.py     GenerationParameters and A1111's `parameters` text, written and read
    png_params.py     the PNG chunks (A1111's text and Inkframe's JSON) and reading any tool's PNG
    comfyui_graph.py  the parameters in a ComfyUI PNG's workflow graph
    file_hashes.py    A1111's model and LoRA hashes, cached

Live-Action and Animation derive their pipelines from the pooled checkpoint (``derive_pipeline``).
Nothing heavy is imported with this package.
"""
