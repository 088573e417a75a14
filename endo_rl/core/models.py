"""Loading causal LMs and tokenizers from a local directory, a GGUF file, or (for users online) a Hub id.

A path that exists on disk is always loaded offline. Anything that looks like a path but does not exist is an
error naming it; only a bare `org/name` that is not on disk is sent to the Hub.

`ENDO_RL_MODEL_PLUGIN=module:function` (an environment variable, for benchmarks, never set by a recipe) calls
`function(model)` on every causal LM loaded here, before it is copied into a reference; the realistic GPU
benchmarks use it to install `bench/stop_hook.py` (random-init models that still stop at varied lengths).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from endo_rl.core.errors import UserError

GGUF_MAGIC = b"GGUF"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not name.endswith(".gguf")


def resolve_source(path: str, gguf_file: str | None = None) -> tuple[str, str | None, bool]:
    """Returns (directory or Hub id, GGUF file name or None, is_local). Raises UserError for missing paths."""
    if not path:
        raise UserError(
            "model path is empty: set model.path (or --model) to a directory, .gguf file or Hub id"
        )
    p = Path(path).expanduser()
    if p.is_file():
        if gguf_file is not None or p.suffix != ".gguf":
            raise UserError(f"model path {path} is a file; expected a model directory or a .gguf file")
        _check_gguf(p)
        return str(p.parent), p.name, True
    if p.is_dir():
        if gguf_file is not None:
            _check_gguf(p / gguf_file)
        return str(p), gguf_file, True
    if _looks_like_hub_id(path):
        return path, gguf_file, False
    raise UserError(
        f"model path {path} does not exist (expected a model directory, a .gguf file or a Hub id)"
    )


def _check_gguf(file: Path) -> None:
    if not file.is_file():
        raise UserError(f"GGUF file {file} does not exist")
    try:
        with open(file, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise UserError(f"GGUF file {file} cannot be read: {err.strerror}") from err
    if magic != GGUF_MAGIC:
        raise UserError(f"{file} is not a GGUF file (its first bytes are {magic!r}, expected b'GGUF')")


def resolve_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {['auto', *DTYPES]}")
    return DTYPES[dtype]


def load_tokenizer(path: str, gguf_file: str | None = None):
    """Tokenizer from a directory, a GGUF file or a Hub id; pad token set to EOS when the tokenizer has none."""
    from transformers import AutoTokenizer

    source, gguf, local = resolve_source(path, gguf_file)
    if local and gguf is None and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"tokenizer directory {path} has none of {', '.join(TOKENIZER_FILES)}")
    try:
        tok = AutoTokenizer.from_pretrained(source, gguf_file=gguf, local_files_only=local)
    except (OSError, ValueError) as err:
        where = "local" if local else "Hub"
        raise UserError(f"cannot load a tokenizer from {where} source {path}: {_first_line(err)}") from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str, gguf_file: str | None = None, dtype: str = "auto", device: str = "cpu"
) -> torch.nn.Module:
    """AutoModelForCausalLM from a directory, a GGUF file (dequantized) or a Hub id, on `device`."""
    from transformers import AutoModelForCausalLM

    source, gguf, local = resolve_source(path, gguf_file)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=gguf, local_files_only=local, dtype=resolve_dtype(dtype, device)
        )
    except (OSError, ValueError) as err:
        where = "local" if local else "Hub"
        raise UserError(f"cannot load a causal LM from {where} source {path}: {_first_line(err)}") from err
    if gguf is not None:
        _forget_gguf_quantizer(model)
    apply_plugin(model)
    return model.to(device)


def _forget_gguf_quantizer(model: torch.nn.Module) -> None:
    """GGUF weights are dequantized into plain tensors at load time, but transformers keeps a GGUF "quantizer"
    on the model that makes `save_pretrained` refuse it (the final export of a trained GGUF model failed that
    way); dropping it leaves an ordinary model that saves and reloads like any other."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def apply_plugin(model: torch.nn.Module) -> None:
    """Call $ENDO_RL_MODEL_PLUGIN (`module:function`) on `model`, if set."""
    spec = os.environ.get("ENDO_RL_MODEL_PLUGIN")
    if not spec:
        return
    import importlib

    module_name, _, func_name = spec.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name or "install")
    except (ImportError, AttributeError) as err:
        raise UserError(f"ENDO_RL_MODEL_PLUGIN={spec!r}: cannot import it: {err}") from err
    func(model)


def check_vocab(model: torch.nn.Module, tokenizer, what: str = "model") -> None:
    """The tokenizer must not produce ids the model's LM head has no row for."""
    weight = model.get_output_embeddings().weight
    rows = getattr(weight, "ds_shape", weight.shape)[0]  # a ZeRO-3-sharded weight keeps its full shape here
    if len(tokenizer) > rows:
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens but the {what}'s output layer has {rows} rows: "
            "tokenizer and model do not match"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_device(device: str, flag: str) -> str:
    """`device` if torch can use it here; a UserError naming `flag` otherwise (e.g. cuda on a CPU-only torch)."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise UserError(
            f"{flag} {device!r} is not a device torch knows (expected cpu, cuda or cuda:N)"
        ) from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{flag} {device}: this torch has no CUDA device available (torch {torch.__version__})"
        )
    return device


def default_device() -> str:
    """$ENDO_RL_DEVICE if set, else CUDA when present, else CPU."""
    return os.environ.get("ENDO_RL_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


COMPILE_BACKEND = "inductor"
"""The torch.compile backend of `compile_layers`. Tests set "aot_eager" (dynamo and autograd tracing, no C++
code generation), which is enough to check the compiled layers' outputs and gradients on a CPU."""


def compile_layers(lm: torch.nn.Module) -> int:
    """Compile each decoder layer of `lm` in place (`model.compile_layers`); returns how many were compiled.

    `nn.Module.compile` keeps the module tree as it is: parameter and state_dict names, LoRA-wrapped
    submodules, the gradient-checkpointing wrapper of each layer, and the weights the static decoder reads
    (`layer.self_attn.q_proj.weight`, ...) are unchanged; only the layer's call runs through torch.compile.
    Shapes are dynamic from the first call, so micro-batches of other (batch, length) reuse the same graphs.
    """
    layers = getattr(lm.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise UserError(
            f"model.compile_layers=true needs a decoder whose layers are `.layers` (Llama/Qwen2-style); "
            f"{type(lm).__name__}'s decoder {type(lm.get_decoder()).__name__} has none"
        )
    for layer in layers:
        layer.compile(backend=COMPILE_BACKEND, dynamic=True)
    return len(layers)
