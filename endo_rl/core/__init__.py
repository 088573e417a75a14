"""The shared core: the one config schema, errors, model/tokenizer loading, templates, JSONL and batch packing."""
