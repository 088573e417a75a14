"""Math evaluation: benchmarks and their gold answers, grading with math-verify, the evaluator, reports."""
