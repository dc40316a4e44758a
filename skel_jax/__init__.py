"""skel_jax: skeleton-snippet contrastive learning and action localization."""

from skel_jax import hugepages as _hugepages

# Before anything heavy is imported: `python -m skel_jax.*` re-executes once
# with glibc's huge-page tunable (skel_jax.hugepages says why).
_hugepages.reexec_if_launched()
