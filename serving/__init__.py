"""BentoML services of Stillhouse (installed as ``stillhouse.serving``): the student, the chain, and the
security middleware both share. Thin adapters over ``stillhouse.serve``."""
