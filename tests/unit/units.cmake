# One line per module under test: nx_unit_test(<module> <libraries>).
nx_unit_test(policy nx_policy)
nx_unit_test(http_client nx_agent)
target_link_libraries(test_http_client PRIVATE ${HTTP_PARSER_LIBRARY})
target_include_directories(test_http_client PRIVATE ${HTTP_PARSER_INCLUDE_DIR})
nx_unit_test(tz_map nx_gateway)
nx_unit_test(policy_edit nx_policy)
nx_unit_test(mime_to_graph nx_gateway)
nx_unit_test(smtp_session nx_gateway)
