"""Tiny randomly-initialised Wan pipelines, saved like the real Diffusers repositories.

Each layout mirrors the `model_index.json` shape of an open Wan checkpoint so the engine
goes through the ordinary `from_pretrained` path. Nothing is downloaded: the tokenizer is
built from an in-memory vocabulary.
"""

from __future__ import annotations

import string
from pathlib import Path

LAYOUTS = ("wan2.1-flf2v", "wan2.2-a14b", "wan2.2-ti2v-5b")

_TEXT_DIM = 32
_CLIP_IMAGE = 8  # CLIP input side; patch 4 -> 4 patches + 1 class token per image
_CLIP_TOKENS = (_CLIP_IMAGE // 4) ** 2 + 1


def _tokenizer():
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", *string.ascii_lowercase, "▁"]
    pieces += [f"▁{letter}" for letter in string.ascii_lowercase]
    return T5Tokenizer(vocab=[(piece, -float(i)) for i, piece in enumerate(pieces)], extra_ids=0)


def _text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
    )
    return UMT5EncoderModel(config).eval()


def _vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def _transformer(in_channels: int, *, image_dim: int | None = None, pos_embed: int | None = None):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=_TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
        image_dim=image_dim,
        pos_embed_seq_len=pos_embed,
    ).eval()


def _clip():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=_CLIP_IMAGE,
        patch_size=4,
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": _CLIP_IMAGE},
        crop_size={"height": _CLIP_IMAGE, "width": _CLIP_IMAGE},
    )
    return CLIPVisionModel(config).eval(), processor


def _components(layout: str) -> dict:
    from diffusers import UniPCMultistepScheduler

    tokenizer = _tokenizer()
    parts = {
        "tokenizer": tokenizer,
        "text_encoder": _text_encoder(len(tokenizer)),
        "vae": _vae(),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
    }
    if layout == "wan2.1-flf2v":
        encoder, processor = _clip()
        transformer = _transformer(36, image_dim=8, pos_embed=2 * _CLIP_TOKENS)
        parts |= {"image_encoder": encoder, "image_processor": processor}
        parts |= {"transformer": transformer}
    elif layout == "wan2.2-a14b":
        parts |= {"transformer": _transformer(36), "transformer_2": _transformer(36)}
        parts |= {"boundary_ratio": 0.9}
    elif layout == "wan2.2-ti2v-5b":
        parts |= {"transformer": _transformer(16), "expand_timesteps": True}
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return parts


def build_tiny_pipeline(layout: str, path: Path) -> Path:
    """Save a tiny random Wan pipeline of `layout` under `path` and return `path`."""
    import torch
    from diffusers import WanImageToVideoPipeline

    torch.manual_seed(0)  # the same weights every time, so tests can compare runs
    pipeline = WanImageToVideoPipeline(**_components(layout))
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path)
    return path


def build_tiny_lora(model: Path, path: Path, *, seed: int = 1) -> Path:
    """Save a random LoRA for the transformer of the tiny pipeline at `model` under `path`."""
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = WanTransformer3DModel.from_pretrained(model, subfolder="transformer")
    torch.manual_seed(seed)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    # Random A and B (not peft's zero B), so the adapter changes the output at scale 1.
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets,
                                       init_lora_weights=False))  # fmt: skip
    WanImageToVideoPipeline.save_lora_weights(
        path, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return path
