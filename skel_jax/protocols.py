"""Localization protocols: name -> path prefix of the parameters that train
(``()``: all). The finetune stage splits its parameters by it
(``finetune.split_trainable``) and config validation reads the names.

  finetune      : everything trains;
  linear        : the released probe: only the per-frame classifier (``fc_loc``)
                  trains; backbone and U-fusion module are frozen, their
                  BatchNorms in inference mode;
  linear_fusion : frozen backbone (inference mode), trainable fusion module
                  and classifier;
  knn           : nothing trains (``skel_jax.knn``); it keeps the linear
                  probe's state layout.
"""

PROTOCOLS = {
  'finetune': (),
  'linear': ('head', 'classifier'),
  'linear_fusion': ('head',),
  'knn': ('head', 'classifier'),
}
