"""The paper's math recipe: data in the paper's prompt format (`data`), the six-benchmark evaluation (`evaluate`),
the training script behind `trl-nft train` (`script`), the official run's loss scale (`official_scale`) and the
packaged recipes (`recipes/*.yaml`, listed by `trl-nft recipes`)."""
