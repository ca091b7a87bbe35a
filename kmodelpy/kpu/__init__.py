"""The Kendryte K210 KPU: feature-map layout in KPU RAM (:mod:`.layout`) and the layer-argument,
batch-norm and activation bitfields (:mod:`.layer_args`). Runtime spec §C."""
