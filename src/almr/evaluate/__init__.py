"""Evaluation: the paper's benchmark families on lm-evaluation-harness, our task definitions
and metrics for the Chinese benchmarks it lacks, LLM-judge tasks, the probe run during CPT,
result files, tables and the averaged metric.

Modules, one job each:

- `metrics`   pure metric functions (CMRC/DRCD EM+F1, jieba ROUGE, BLEU, GSM8K, SECEU/EQ, %Chinese)
- `registry`  every task we know: family, data files, mode, primary metric; the suites
- `benchmark_files`  reading benchmark files in their published layouts, with file/line/field errors
- `tasks/`    lm-eval YAML task definitions (variants `include:` a shared `_*_template`) + `utils.py`
              (`!function` hooks into `metrics`; prompts from `almr.prompts`)
- `harness`   runs a suite through lm-eval (in-process HFLM or an OpenAI-compatible URL)
- `endpoint`  the one HTTP client for OpenAI-compatible endpoints (retries, backoff, one-line errors);
              `endpoint_lm`: lm-eval's local-completions / local-chat-completions sending through it
- `catalog`   lm-eval's own task catalogue: any lm-eval task by name, loading with `eval.task_overrides`
- `loglik`    our batched log-likelihood scorer (the probe's fast path), split across processes
- `probe`     `TaskProbe`, the callable the CPT trainer runs every `cpt.probe.every_tokens`: seeded
              subsets of any tasks, scored by lm-eval; `probe_from_config(eval_section, tokenizer)`
- `probe_lm`  the lm-eval model the probe scores through (HFLM + `loglik`, work split across processes)
- `results`   result JSON, Markdown/CSV tables in the layout of the paper's Tables 4–5, averaged metric
- `codeexec`  HumanEval-style tests in a sandboxed subprocess with a time limit (opt-in)
- `judge`     BelleEval scoring and the BotChat-style Turing test through a judge endpoint
"""
