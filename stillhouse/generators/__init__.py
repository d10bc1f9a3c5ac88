"""Query generation library (Promptagator hard prompts, SPTAR soft prompts, round-trip filtering)."""
