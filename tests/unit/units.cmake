# One line per module under test: nx_unit_test(<module> <libraries>).
nx_unit_test(policy nx_policy)
