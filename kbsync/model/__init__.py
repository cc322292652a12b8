"""The model boundary: loading, architecture adapters, hooks, token positions, scoring, probing.

Import from the submodules (this package imports nothing, so ``import kbsync`` stays fast):

    loading   load_model(spec, state_dir=..., dtype=..., device=...) -> LoadedModel
    adapters  adapter_for(model, overrides) -> ArchitectureAdapter
    hooks     Trace, TraceDict, StopForward
    tokens    pad_id_of, encode_row (the subject's last token), encode_batch, encode_with_targets,
              last_token_index
    scoring   target_logprobs, greedy_answers, greedy_generate, in_batches
    probe     probe(model, tokenizer, items) -> list[ProbeResult], normalise_answer, answer_matches
"""
