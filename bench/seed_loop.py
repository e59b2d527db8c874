"""The seed notebook's training loop, re-created plainly: the baseline the benchmark compares against.

One item per image, as the notebook's `Image_dataset` (`train = data[:7000]`): `__getitem__` opens the
image from disk with PIL and draws one of that image's captions at random, so an epoch is one pair per
image (753 here); `CLIPProcessor` (resize, crop, normalise, tokenize with padding=True) in the collate function; `num_workers=0`; fp32; PEFT LoRA
r=16, alpha=16, dropout 0.1 on q_proj and v_proj of both towers; `torch.optim.Adam(lr=1e-4)`; CLIP's
own symmetric cross-entropy (`return_loss=True`). Not product code: it is here to be measured.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from measure import memory, rate, reset_peak, sync, train_captions


def seed(args) -> dict:
    """The seed notebook, step by step: an item per image with a random caption, images opened from disk in __getitem__,
    CLIPProcessor in the collate function, plain fp32 PEFT LoRA, Adam, CLIP's own loss."""
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    device = torch.device(args.device)
    torch.manual_seed(0)
    random.seed(0)
    images = [(Path(args.image_dir) / name, caps) for name, caps in train_captions(args.captions)]

    class ImageItems(Dataset):  # the notebook's Image_dataset
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            path, captions = images[i]
            return Image.open(path).convert("RGB"), random.choice(captions)

    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(args.model_dir),
                              tokenizer=AutoTokenizer.from_pretrained(args.model_dir))

    def collate(batch):
        images, texts = zip(*batch)
        return processor(text=list(texts), images=list(images), return_tensors="pt", padding=True)

    loader = DataLoader(ImageItems(), batch_size=args.batch_size, shuffle=True, collate_fn=collate, num_workers=0)
    model = CLIPModel.from_pretrained(args.model_dir)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=args.dropout,
                                             target_modules=["q_proj", "v_proj"], bias="none"))
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    before = memory(device)
    reset_peak()
    need = args.warmup + args.steps if args.steps else max(len(loader), args.warmup + 1)
    durations, pairs = [], []
    start = time.perf_counter()
    while len(durations) < need:
        for batch in loader:  # the time to load and process a batch is part of the step
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch, return_loss=True).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss.item()
            sync(device)
            now = time.perf_counter()
            durations.append(now - start)
            pairs.append(len(batch["input_ids"]))
            start = now
            if len(durations) == need:
                break
    return {**rate(durations, pairs, args.warmup), "epoch_pairs": len(images), "before": before, "steps": memory(device)}


