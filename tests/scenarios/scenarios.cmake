# Black-box scenarios: each tests/scenarios/<name>.py runs against a fresh
# agent and simulator (see tests/scenarios/harness.py).
add_test(NAME policy_cli_edits
  COMMAND ${SYSTEM_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/scenarios/policy_cli_edits.py)
set_tests_properties(policy_cli_edits PROPERTIES LABELS scenario
  ENVIRONMENT "NEXTAL_POLICY=$<TARGET_FILE:nextal-policy>")
