# Thin wrappers over the `python -m <package>` entry points. Every target installs .venv first when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= train,cpu,fast,demo,bench,dev

MODEL  ?= resnet18_cpu
DATA   ?= data/elpv
ENGINE ?= onnx
CSV    ?= test.csv
OUT    ?= submission.csv
NPROC  ?= 1
RESUME ?=
FOLDS  ?=
BASELINE ?=
TOLERANCE ?= 5%
TARGETS ?=
PRETRAINED ?=
# make audit's feature sets: one folder, or a YAML list combined by image id, e.g. [features/a,features/b];
# unset: features/$(MODEL) when MODEL is given on the command line, else configs/clean.yaml's list
FEATURES ?=
PRECISION ?=
ARGS   ?=
# the demo's backbones: the from-scratch CNN and the ImageNet-pretrained EfficientNet-Lite0 (make weights)
DEMO_MODELS ?= resnet18_cpu efficientnet_lite0
# the demo's bench: configs/bench.yaml's cells less the TTA one, 2 rounds of 2 s (make bench runs them all, 3 x 3 s);
# measured: 319 s for the full matrix of both backbones on 2 cores (README, "make demo")
DEMO_BENCH ?= --set rounds=2 min_seconds=2 engines=[torch,onnx,onnx:int8,onnx:fp16,openvino,openvino:int8]
comma := ,
space := $(empty) $(empty)
# gpu-check runs with the machine's own Python (nothing installed): .venv's where there is one, else python3
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_OUT ?=
# make chain: every shipped backbone config (configs/models/*.yaml)
CHAIN_MODELS ?= $(subst $(eval) ,$(comma),$(basename $(notdir $(wildcard configs/models/*.yaml))))

STAMP := $(VENV)/.installed

.PHONY: help venv data weights split train export verify predict features audit clean bench microbench memory demo gpu-data gpu-check chain test test-slow lint format tensorboard distclean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with the CPU extras

data: $(STAMP)  ## write the embedded ELPV dataset to data/elpv in the contest layout
	$(PY) -m train.prepare_elpv --out data/elpv

weights: $(STAMP)  ## write the offline EfficientNet-Lite0 ImageNet weights (timm names) to data/weights/
	$(PY) -m train.pretrained --out data/weights/efficientnet_lite0.pth

split: $(STAMP)  ## seeded stratified train_/valid_ split + class map (configs/split.yaml)
	$(PY) -m train.split --set dataset=$(DATA) $(ARGS)

train: $(STAMP)  ## train MODEL (configs/models/$(MODEL).yaml) on DATA [NPROC=n: torchrun DDP] [RESUME=1] [FOLDS=k]
ifeq ($(FOLDS),)
	$(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC),$(PY)) -m train --model $(MODEL) --data $(DATA) $(if $(RESUME),--resume) $(ARGS)
else
	$(PY) -m train --model $(MODEL) --data $(DATA) --folds $(FOLDS) --nproc $(NPROC) $(if $(RESUME),--resume) $(ARGS)
endif

export: $(STAMP)  ## export artifacts/$(MODEL)/best.pt to verified ONNX/INT8/FP16/OpenVINO (TARGETS=..., PRECISION=... for trt, FOLDS=k: every fold)
	$(PY) -m export --model $(MODEL) --data $(DATA) $(if $(FOLDS),--folds $(FOLDS)) $(if $(TARGETS),--targets $(TARGETS)) $(if $(PRECISION),--precision $(PRECISION)) $(ARGS)

verify: $(STAMP)  ## re-verify every exported artifact of MODEL against its checkpoint
	$(PY) -m export.verify --model $(MODEL) --data $(DATA) $(ARGS)

predict: $(STAMP)  ## write $(OUT) for $(DATA)/$(CSV) with ENGINE (and PRECISION)
	$(PY) -m runtime.predict --engine $(ENGINE) --model artifacts/$(MODEL) --data $(DATA) --csv $(CSV) --out $(OUT) $(if $(PRECISION),--precision $(PRECISION)) $(ARGS)

features: $(STAMP)  ## pre-logit features of DATA/train.csv with ENGINE -> features/$(MODEL)/ [PRETRAINED=1: the config's pretrained backbone, no training]
ifneq ($(PRETRAINED),)
	$(PY) -m train --model $(MODEL) --data $(DATA) --pretrained-only
	$(if $(filter torch,$(ENGINE)),,$(PY) -m export --model $(MODEL)_pretrained --data $(DATA) --targets $(ENGINE))
endif
	$(PY) -m runtime.features --engine $(ENGINE) --model artifacts/$(MODEL)$(if $(PRETRAINED),_pretrained) --data $(DATA) --csv train.csv --out features/$(MODEL)$(if $(PRETRAINED),_pretrained) $(ARGS)

audit: $(STAMP)  ## dataset cleaning: outliers + label issues -> reports/clean/ (configs/clean.yaml) [FEATURES=dir or [dir,dir]]
	$(PY) -m train.clean $(if $(FEATURES),--set features=$(FEATURES),$(if $(filter command line,$(origin MODEL)),--set features=features/$(MODEL))) --set csv=$(DATA)/train.csv --set images=$(DATA)/train $(ARGS)

bench: $(STAMP)  ## F1 x throughput x latency of every trained backbone x engine -> reports/<run>/ [BASELINE=results.json]
	$(PY) -m bench --set data=$(DATA) $(if $(BASELINE),--baseline $(BASELINE) --fail-on-regression $(TOLERANCE)) $(ARGS)

demo: $(STAMP)  ## data -> weights -> split -> train -> export -> predict -> bench on ELPV with both demo backbones (DEMO_MODELS)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory data && \
	$(MAKE) --no-print-directory weights && \
	$(MAKE) --no-print-directory split DATA=data/elpv && \
	for m in $(DEMO_MODELS); do \
		$(MAKE) --no-print-directory train MODEL=$$m DATA=data/elpv && \
		$(MAKE) --no-print-directory export MODEL=$$m DATA=data/elpv ARGS=--allow-degraded || exit 1; \
	done && \
	$(MAKE) --no-print-directory predict MODEL=$(firstword $(DEMO_MODELS)) DATA=data/elpv ENGINE=onnx && \
	$(MAKE) --no-print-directory bench DATA=data/elpv ARGS="--set models=[$(subst $(space),$(comma),$(strip $(DEMO_MODELS)))] $(DEMO_BENCH)" && \
	echo && echo "demo finished in $$(( $$(date +%s) - start )) s. Outputs:" && \
	echo "  dataset      data/elpv/ (train/, test/, train.csv, test.csv, test_labels.csv)" && \
	echo "  weights      data/weights/efficientnet_lite0.pth (ImageNet EfficientNet-Lite0, timm names)" && \
	echo "  checkpoints  $(foreach m,$(DEMO_MODELS),artifacts/$(m)/best.pt)" && \
	echo "  ONNX         artifacts/<model>/model.onnx (verification: artifacts/<model>/verify.json)" && \
	echo "  submission   $(OUT) ($(firstword $(DEMO_MODELS)), ONNX Runtime)" && \
	echo "  bench        reports/latest/report.html (and report.md, results.csv, results.json, plots)" && \
	echo "  TensorBoard  runs/<model>/ (make tensorboard)"

microbench: $(STAMP)  ## pytest-benchmark timings of each CPU engine's forward pass (tiny model) and of the exact vs fast decoders
	$(PY) -m pytest tests/benchmarks --benchmark-enable --benchmark-columns=median,iqr,ops $(ARGS)

memory: $(STAMP)  ## peak RSS of runtime.predict at 2,000 vs 20,000 images (MODEL, ENGINE)
	$(PY) -m bench.memory --engine $(ENGINE) --model artifacts/$(MODEL) --data $(DATA) $(ARGS)

gpu-data: $(STAMP) weights  ## CPU machine: data/gpucheck for gpu-check (400 ELPV images, Lite0 weights, CPU reference F1)
	$(PY) -m bench.gpucheck.data $(ARGS)

gpu-check:  ## GPU machine: the GPU verification kit (installs nothing) [GPU_OUT=dir for the summary] [ARGS=--plan]
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m bench.gpucheck $(if $(GPU_OUT),--out $(GPU_OUT)) $(ARGS)

chain: $(STAMP)  ## per backbone: train 1 epoch -> export every CPU target -> predict -> bench; time/memory table -> reports/chain/
	$(PY) -m bench.chain --models $(CHAIN_MODELS) --predict-bench $(ARGS)

test-slow: $(STAMP)  ## only the tests marked slow (the chain for every shipped config on a generated contest-layout set)
	$(PY) -m pytest -m slow $(ARGS)

test: $(STAMP)  ## run the test suite (CPU) without the tests marked slow (ARGS="-m slow": only those)
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff check, ruff format --check and the import contracts (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)  ## apply ruff format and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: $(STAMP)  ## open the training logs under runs/
	$(VENV)/bin/tensorboard --logdir runs

# Generated outputs that `make clean` removes. Folders under data/ go only when this tool wrote them (they carry
# the .imgcls-output marker, e.g. data/elpv from `make data`): a dataset you put there yourself is never touched.
GENERATED := artifacts runs reports features submission.csv submission.csv.errors.csv submission.csv.partial.csv data/weights/efficientnet_lite0.pth

clean:  ## remove generated outputs: artifacts/ runs/ reports/ features/ submission.csv*, tool-written data/* (keeps .venv)
	@for p in $(GENERATED) $(dir $(wildcard data/*/.imgcls-output)); do \
		if [ -e "$$p" ]; then echo "removing $$p"; rm -rf "$$p"; fi; \
	done
	@rmdir data/weights 2>/dev/null; true
	@for d in data/*/; do [ -d "$$d" ] && [ ! -e "$$d.imgcls-output" ] && echo "kept $$d (not written by this tool)"; done; true

distclean: clean  ## make clean, then remove .venv too
	rm -rf $(VENV)
