# medfed: the two entry points of a fresh machine are `make simulate` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: 2.13.0 is the CPU wheel; an open range pulls a CUDA build.
TORCH  := torch==2.13.0
BRAIN  := data/brain-mri
CACHE  := data/brain-mri-cache
PUBLIC := data/brain-mri-public
PUBCACHE := data/brain-mri-public-cache
WEIGHTS  := data/public-pooled-cnn.pt
RUN    := runs/demo
SEGCACHE := data/brain-mri-seg-cache
SEGRUN   := runs/demo-segmentation
BRAINVOL := data/brain-mri-volumes
VOLCACHE := data/brain-mri-volume-cache
VOLRUN   := runs/demo-3d

export FLWR_TELEMETRY_ENABLED := 0

.PHONY: simulate simulate-segmentation simulate-3d test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The default demo: 3 simulated hospitals of brain MRI (real MNI152 anatomy shipped in nilearn,
# simulated ring-enhancing tumours and scanners) written as DICOM, each prepared into its own
# cache. Many
# patients with few slices each (150 x 6 per hospital): patient-level DP needs many patients.
$(BRAIN)/.generated: $(VENV)/.installed simulations/brain_lesions.py \
    simulations/dicom_writer.py simulations/seg_writer.py
	$(BIN)/medfed-sim generate --dataset brain-mri --out $(BRAIN) --sites 3 --subjects 150 \
		--slices 6
	touch $@

$(CACHE)/.prepared: $(BRAIN)/.generated common/data/preprocessing_contract.py
	for site in 0 1 2; do \
		$(BIN)/medfed-site prepare --data $(BRAIN)/site-$$site/dicom \
			--labels $(BRAIN)/site-$$site/labels.csv --classes no-lesion,lesion \
			--out $(CACHE)/site-$$site --spacing 3.0 --size 64 || exit 1; \
	done
	touch $@

# Stand-in for public data (a real deployment would pretrain on a public dataset): other
# subjects of the same simulator (another seed), on its four simulated scanners, one of which no
# hospital has. No hospital's image is used. The network is pretrained on it without DP.
$(PUBLIC)/.generated: $(VENV)/.installed simulations/brain_lesions.py \
    simulations/dicom_writer.py simulations/seg_writer.py
	$(BIN)/medfed-sim generate --dataset brain-mri --out $(PUBLIC) --sites 4 --subjects 40 \
		--slices 6 --seed 1
	touch $@

$(WEIGHTS): $(PUBLIC)/.generated common/data/preprocessing_contract.py
	for site in 0 1 2 3; do \
		$(BIN)/medfed-site prepare --data $(PUBLIC)/site-$$site/dicom \
			--labels $(PUBLIC)/site-$$site/labels.csv --classes no-lesion,lesion \
			--out $(PUBCACHE)/site-$$site --spacing 3.0 --size 64 || exit 1; \
	done
	$(BIN)/medfed-sim pretrain --data $(PUBCACHE) --out $@ --model pooled-cnn --epochs 20 \
		--lr 0.001 --class-weights 1,2.7

## simulate: federated tumour detection across the 3 hospitals (SecAgg+, DP at epsilon 8 per
## patient, about 11 patients a step; lesion slices weighted 2.7 to 1 in the loss), with
## baselines. The network is pooled-cnn (the flattened cnn memorised the slices instead of
## finding the tumours), starting from weights pretrained on public stand-in data: DP-SGD needs
## good features. The hospitals train only its 130-parameter head under DP (--trainable head):
## noising all 46,818 parameters at 11 patients a step washes the pretrained features out.
## Thresholded metrics at the threshold chosen each round on the same public data
## (--threshold-data): no hospital's patient enters it, and the hospitals' 45 validation
## patients chose thresholds that did not carry over to the test set (docs/results.md).
simulate: $(CACHE)/.prepared $(WEIGHTS)
	$(BIN)/medfed-sim run --data $(CACHE) --sites 3 --partition site --rounds 5 --local-epochs 2 \
		--batch-size 64 --lr 0.03 --trainable head --dp-epsilon 8 --class-weights 1,2.7 \
		--model pooled-cnn --initial-weights $(WEIGHTS) --threshold-data $(PUBCACHE) \
		--baseline pooled --baseline local --out $(RUN)

# Real chest X-rays: PneumoniaMNIST (MedMNIST v2), by default from the team's shared folder.
# 424 of its official val images stand in for public data (no hospital or test image; the same
# source, so it flatters pretraining: docs/results.md); the rest of val is the sites' validation.
PNEUMONIA ?= ../shared/data/pneumoniamnist.npz
PNEUDATA  := data/pneumonia
PNEURUN   := runs/pneumonia-dp

$(PNEUMONIA):
	@echo "$@: no such file. PneumoniaMNIST (MedMNIST v2's pneumoniamnist.npz) is needed:" \
		"make simulate-pneumonia PNEUMONIA=/path/to/pneumoniamnist.npz" >&2; exit 1

$(PNEUDATA)/hospitals.npz: $(VENV)/.installed bench/pneumonia_public_split.py | $(PNEUMONIA)
	mkdir -p $(PNEUDATA)
	$(BIN)/python bench/pneumonia_public_split.py --data $(PNEUMONIA) \
		--out-public $(PNEUDATA)/public.npz --out-hospitals $@

# Pretrained without DP on the public stand-in, each batch shifted by up to 2 pixels (the 424
# images memorise in 30 epochs without it): its weights alone score ROC-AUC 0.949, not 0.914.
$(PNEUDATA)/public-cnn-shift.pt: $(PNEUDATA)/hospitals.npz bench/pneumonia_pretrain.py \
    bench/pneumonia_augmentation.py
	$(BIN)/python bench/pneumonia_pretrain.py --data $(PNEUDATA)/public.npz --out $@ \
		--augment shift --epochs 150

.PHONY: simulate-pneumonia
## simulate-pneumonia: PneumoniaMNIST across 3 hospitals with Dirichlet(0.5) label skew, DP at
## epsilon 8 per image (the .npz knows no patients), SecAgg+, with the DP recipe measured in
## docs/results.md: weights pretrained with shift augmentation on the public stand-in, then
## DP-SGD kept gentle so that it does not wash them out (SGD lr 0.1, expected batch 512,
## 5 rounds x 1 epoch: fewer steps, less noise per step at the same epsilon).
simulate-pneumonia: $(PNEUDATA)/public-cnn-shift.pt
	$(BIN)/medfed-sim run --data $(PNEUDATA)/hospitals.npz \
		--initial-weights $(PNEUDATA)/public-cnn-shift.pt --sites 3 --partition dirichlet:0.5 \
		--rounds 5 --local-epochs 1 --batch-size 512 --optimizer sgd --lr 0.1 --dp-epsilon 8 \
		--out $(PNEURUN)

# The same hospitals' DICOM, with the lesion masks taken from the DICOM SEG object of each series.
$(SEGCACHE)/.prepared: $(BRAIN)/.generated common/data/preprocessing_contract.py
	for site in 0 1 2; do \
		$(BIN)/medfed-site prepare --data $(BRAIN)/site-$$site/dicom --task segmentation \
			--out $(SEGCACHE)/site-$$site --spacing 3.0 --size 64 || exit 1; \
	done
	touch $@

## simulate-segmentation: federated lesion segmentation across the 3 hospitals against pooled
## training, without DP. (Under DP at epsilon 8 a U-Net from random weights predicts nothing; one
## pretrained on the public stand-in, trained only in its last decoder block: docs/results.md.)
simulate-segmentation: $(SEGCACHE)/.prepared
	$(BIN)/medfed-sim run --data $(SEGCACHE) --task segmentation --sites 3 --partition site \
		--rounds 20 --local-epochs 2 --lr 0.003 --no-dp --baseline pooled --out $(SEGRUN)

# Whole heads for volumes (the 2D demo keeps 6 slices a subject): 16 subjects per hospital,
# each series a 48^3 volume at 3 mm, masks from DICOM SEG.
$(BRAINVOL)/.generated: $(VENV)/.installed simulations/brain_lesions.py \
    simulations/dicom_writer.py simulations/seg_writer.py
	$(BIN)/medfed-sim generate --dataset brain-mri --out $(BRAINVOL) --sites 3 --subjects 16
	touch $@

$(VOLCACHE)/.prepared: $(BRAINVOL)/.generated common/data/preprocessing_contract.py
	for site in 0 1 2; do \
		$(BIN)/medfed-site prepare --data $(BRAINVOL)/site-$$site/dicom --task segmentation \
			--dims 3 --out $(VOLCACHE)/site-$$site --spacing 3.0 --size 48 || exit 1; \
	done
	touch $@

## simulate-3d: federated 3D lesion segmentation (a 3D U-Net on 24^3 patches, metrics in mm per
## volume) across the 3 hospitals against pooled and local training, without DP. Batch 4: twice
## the steps of batch 8 from the same patches, which FedAvg's few local steps need. 20 rounds, not
## 10: federated Dice 0.812 against 0.749 over 3 seeds, 0.022 below pooled trained as many passes
## (about 7-8 min idle on 2 cores, estimated from CPU time; docs/results.md).
simulate-3d: $(VOLCACHE)/.prepared
	$(BIN)/medfed-sim run --data $(VOLCACHE) --task segmentation-3d --sites 3 --partition site \
		--rounds 20 --local-epochs 2 --batch-size 4 --lr 0.003 --no-dp --baseline pooled \
		--baseline local --out $(VOLRUN)

## test: lint, type check (mypy, configured in pyproject.toml), then the whole test suite on two
## workers, a test file each (end-to-end files first: tests/conftest.py), slowest tests listed.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs data .pytest_cache .ruff_cache .mypy_cache
