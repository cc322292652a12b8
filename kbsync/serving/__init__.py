"""Into the serving stack: a model version as a GGUF or a LoRA adapter, the served model probed over
HTTP, and the engine told to reload when a version is promoted or rolled back (docs/serving.md).

    log.py          the active delta log of a version, read from SQL and its files (no model load)
    gguf_names.py   Hugging Face tensor names <-> GGUF names (gguf's own table)
    gguf_export.py  a version as a GGUF: a GGUF base's unedited tensors byte for byte, edited ones F32/F16
    gguf_convert.py a Hugging Face base (Llama family) as a GGUF
    lora.py         the delta log as exact LoRA factors (compressed past a rank, with the error bound)
    lora_files.py   those factors as a PEFT adapter directory and as a llama.cpp GGUF LoRA
    endpoint.py     an OpenAI-compatible /v1/completions client: replicas, concurrency, retries
    served_probe.py the diff's probe answered by that endpoint
    reload.py       [serve]: export, reload (command or HTTP), probe the served model, audit
"""
