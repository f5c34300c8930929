# Black-box scenarios: each tests/scenarios/<name>.py starts its own
# simulator and agent (see tests/sandbox/sandbox.py) and drives them with
# real clients.
set(NX_SCENARIO_ENV
  "NEXTAL_AGENT=$<TARGET_FILE:nextal-agent>"
  "NEXTAL_POLICY=$<TARGET_FILE:nextal-policy>"
  "NEXTAL_BUILD_DIR=${CMAKE_BINARY_DIR}"
  "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0"
  "PYTHONDONTWRITEBYTECODE=1")

# nx_scenario(NAME): tests/scenarios/NAME.py as ctest test NAME.
function(nx_scenario name)
  add_test(NAME ${name}
    COMMAND ${SYSTEM_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/scenarios/${name}.py)
  set_tests_properties(${name} PROPERTIES LABELS scenario TIMEOUT 600
    ENVIRONMENT "${NX_SCENARIO_ENV}")
endfunction()

nx_scenario(smtp_mail_delivery)
nx_scenario(smtp_protocol)
nx_scenario(smtp_limits)
nx_scenario(agent_reload_and_logs)
nx_scenario(agent_database)
nx_scenario(smtp_clients)
nx_scenario(delivery_resilience)
nx_scenario(policy_cli_edits)
nx_scenario(policy_switch_holds_mail)
nx_scenario(policy_fail_closed)
nx_scenario(caldav_events)
nx_scenario(policy_matrix)
nx_scenario(mail_durability)
nx_scenario(mail_pacing)
nx_scenario(linking_delegated)
nx_scenario(linking_grant_gone)
nx_scenario(linking_application)
nx_scenario(linking_key_file)
nx_scenario(mail_large_and_fidelity)
nx_scenario(mail_crash_load)
nx_scenario(linking_token_outage)
nx_scenario(client_certificate)
