"""stvl-jax's packaged YAML configs: `models/*.yaml` (model presets, `QwenVLConfig` fields) and `train/*.yaml`
(train configs). Installed with the wheel; read through `stvl_jax.packaged` (`stvl train streamo_tiny`,
`model.config: qwen3vl_tiny`), never by path from the installed code."""

STVL_JAX_PACKAGE_DATA = True  # tells stvl_jax.packaged this is stvl-jax's package, not a user's `configs`
