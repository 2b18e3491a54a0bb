"""Pure comparison and judgement: windows of numbers in, typed verdicts out."""
