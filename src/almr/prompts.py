"""Prompt layouts shared by the demo world's corpora and almr's benchmark task definitions.

The world's corpora contain documents in these layouts (quizzes, reviews with their sentiment,
news with a summary, bilingual pairs, ...) so that a model pretrained on the world can be
scored by log-likelihood or generation on the benchmarks without instruction tuning, the way
base models are evaluated on cloze-style tasks. The evaluation tasks (`almr.evaluate.tasks`)
build their prompts from the same strings; the paper's tasks over public data reuse them too
(they are ordinary cloze/QA layouts). Ground floor: nothing here imports almr.
"""

QA = {"en": "Question: {question}\nAnswer:", "zh": "问题：{question}\n答案："}
MATH = {"en": "Question: {question}\nAnswer:", "zh": "问题：{question}\n解答："}
READING = "文章：{context}\n问题：{question}\n答案："
SUMMARY = "{text}\n摘要："
SENTIMENT = "评论：{sentence}\n情感："
SENTIMENT_LABELS = {"Positive": "正面", "Negative": "负面"}
TRANSLATE = {"en-zh": "English: {source}\n中文：", "zh-en": "中文：{source}\nEnglish:"}
FEELING = {"en": "{scenario} {subject} felt", "zh": "{scenario}{subject}感到很"}
