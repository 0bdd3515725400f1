"""Cohort training: the clients of a round trained together as one batched (``torch.func.vmap``) model.

``stacking`` turns the cohort's weights into tensors with a leading client dimension,
``plan`` draws every client's batches exactly as its TorchTrainer would, ``optim``
applies SGD/Adam per client on the stacked tensors, ``train`` runs the vmapped loop,
``probe`` decides whether a model may take this path, ``budget`` sizes a cohort to a
memory budget and ``runner`` is what the executors call. See docs/architecture.md.
"""
