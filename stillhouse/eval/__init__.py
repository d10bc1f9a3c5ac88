"""BEIR loading, metrics through ir_measures/pytrec_eval, and reports."""
