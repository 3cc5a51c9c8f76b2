"""Fine-tuning tasks (GLUE, CoNLL-2003 NER, SQuAD): their data, heads, metrics and task distillation."""
