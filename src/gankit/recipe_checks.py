"""A GAN recipe that cannot work fails when it is built, with one message naming the key to change."""

from __future__ import annotations

from torch import nn


def check_recipe(
    generator: nn.Module,
    discriminator: nn.Module,
    *,
    n_critic: int,
    gp_weight: float | None,
    r1_gamma: float | None,
    r1_every: int,
    r1_until: int | None,
    pack: int,
    num_classes: int | None,
    conditional: bool,
    info: dict | None,
    top_k: dict | None,
) -> dict | None:
    """Raises ValueError for a GANModule configuration that cannot train; returns top_k with its defaults filled."""
    if int(n_critic) != n_critic or n_critic < 1:
        raise ValueError(f"n_critic (discriminator steps per generator step) must be an integer >= 1, got {n_critic}")
    for name, value in (("gp_weight", gp_weight), ("r1_gamma", r1_gamma)):
        if value is not None and not value > 0:
            raise ValueError(f"model.{name} must be positive, or null to switch it off; got {value}")
    if top_k is not None:
        top_k = {"decay": 0.99, "min_fraction": 0.5, **top_k}
        if set(top_k) != {"decay", "min_fraction"} or not (0 < top_k["decay"] <= 1 and 0 < top_k["min_fraction"] <= 1):
            raise ValueError(f"model.top_k takes decay (per epoch) and min_fraction, both in (0, 1]; got {dict(top_k)}")
    if int(r1_every) != r1_every or r1_every < 1:
        raise ValueError(f"model.r1_every (D steps between R1 penalties) must be an integer >= 1, got {r1_every}")
    if r1_until is not None and (int(r1_until) != r1_until or r1_until < 1):
        raise ValueError(
            f"model.r1_until (the generator step R1 stops at) must be an integer >= 1, or null for the whole "
            f"run; got {r1_until}"
        )
    if getattr(discriminator, "pack", 1) != pack:
        raise ValueError(
            f"model.pack={pack} but the discriminator takes {getattr(discriminator, 'pack', 1)} samples at once; "
            "leave model.discriminator.pack at ${model.pack}"
        )
    if conditional and num_classes is None:
        raise ValueError(
            "this model is conditional, but the data has no labels (data.num_classes is null): "
            "train it on labelled data (data=mnist, stacked_mnist, ring, grid) or choose an unconditional model"
        )
    classes = getattr(generator, "num_classes", None)
    if num_classes is not None and num_classes != classes:
        raise ValueError(
            f"model.num_classes={num_classes} but the generator is conditioned on {classes}; "
            "leave model.generator.num_classes at ${model.num_classes}"
        )
    if getattr(discriminator, "num_classes", None) != classes:
        raise ValueError(
            f"the generator is conditioned on {classes} classes but the discriminator on "
            f"{getattr(discriminator, 'num_classes', None)}: set both num_classes alike"
        )
    if classes is not None and pack != 1:
        raise ValueError("model.pack > 1 packs samples of different classes: a conditional model takes pack=1")
    if info and (not hasattr(discriminator, "feature_dim") or classes is not None or pack != 1):
        raise ValueError(
            "model.info (InfoGAN) needs an unconditional, unpacked discriminator that exposes its features "
            "(the DCGAN one: model=infogan)"
        )
    return top_k
