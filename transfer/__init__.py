"""Detection transfer of the pre-trained ResNet-50 to PASCAL VOC (paper Table 6, MoCo's protocol).

With detectron2: :mod:`transfer.convert_to_detectron2` (weights) and ``transfer/train_net.py``.
Without it, ``python transfer/finetune_voc.py`` (or ``python -m transfer.finetune_voc``), the
command line of a torchvision Faster R-CNN R50-C4 built from these modules:

* :mod:`transfer.voc_format`: the VOC files (layout, annotation XML, split lists, classes);
* :mod:`transfer.voc_dataset`: the torch data set and the horizontal flip;
* :mod:`transfer.voc_eval`: VOC AP as detectron2's ``PascalVOCDetectionEvaluator``;
* :mod:`transfer.detection_model`: the R50-C4 model;
* :mod:`transfer.backbone_weights`: loading ``backbone.pt`` into its ResNet-50;
* :mod:`transfer.engine`: sampler, schedule, optimizer, precise BN, training and evaluation;
* :mod:`transfer.errors`: :class:`~transfer.errors.FinetuneError`.

Importing the package imports none of them (no torch), so ``import transfer`` stays cheap.
Installed with the project (``pip install -e .``), ``import transfer.voc_format`` works from
any folder.
"""
