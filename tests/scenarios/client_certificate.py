#!/usr/bin/python3
"""Certificate authentication end to end: with `client_certificate` and
`client_key` in agent.ini (no secret), the agent gets its tokens with a
signed client assertion that the simulator verifies (openssl, against the
certificate registered on the app), and mail submitted over SMTP reaches
Graph. When the app's registered certificate is rotated to one the agent
does not hold, token requests fail with AADSTS700027, and both the
agent's log and `nextal-policy status` say so; registering the agent's
certificate again lets the held mail through."""

import json
import time

from scenario import ALICE, BOB, AgentTestCase, main, sandbox


def message(subject):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nSigned in with a "
            "certificate.\r\n" % (ALICE, BOB, subject))


class ClientCertificate(AgentTestCase):

    sandbox_options = {"client_certificate": True}

    def token_requests(self):
        return self.box.sim_get("/_sim/tokens")["requests"]

    def status(self):
        return json.loads(self.box.policy_cli("status", "--json").stdout)

    def test_1_mail_is_delivered_with_an_assertion(self):
        with open(self.box.path("agent.ini")) as f:
            ini = f.read()
        self.assertIn("client_certificate = ", ini)
        self.assertNotIn("client_secret", ini)

        before = self.sent_count(ALICE)
        self.send(ALICE, [BOB], message("certificate delivery"))
        got = self.wait_one_more(ALICE, before)
        self.assertEqual(got[0]["resource"]["subject"], "certificate delivery")

        # Every token the agent and nextal-policy asked for was granted on
        # a verified assertion; none presented the secret.
        log = self.token_requests()
        self.assertTrue(log)
        self.assertEqual({e["credential"] for e in log}, {"assertion"}, log)
        self.assertTrue(all(e["status"] == 200 for e in log), log)
        self.assertTrue(self.status()["token"]["ok"])

    def test_2_rotated_registration_refuses_the_agent(self):
        self.box.make_certificate("other")
        self.box.sim_post("/_sim/certificates", {
            "certificates": [self.box.certificate_pem("other")]})
        self.addCleanup(self.box.sim_post, "/_sim/certificates", {
            "certificates": [self.box.certificate_pem("client")]})

        status = self.status()
        self.assertFalse(status["token"]["ok"])
        self.assertIn("AADSTS700027", status["token"]["detail"])
        self.assertFalse(status["active"])
        text = self.box.policy_cli("status").stdout
        self.assertIn("token:         NOT OBTAINED", text)
        self.assertIn("AADSTS700027", text)

        # The agent's cached token dies; its next token request is refused
        # and the mail waits.
        self.box.sim_post("/_sim/tokens", {"expire_access_tokens": True})
        before = self.sent_count(ALICE)
        self.send(ALICE, [BOB], message("after rotation"))
        sandbox.wait_for(
            lambda: "AADSTS700027" in self.box.agent_output(), 30,
            "the agent to log the refused assertion")
        line = next(l for l in self.box.agent_output().splitlines()
                    if "AADSTS700027" in l)
        self.assertIn("token refresh_failed status=401 error=invalid_client",
                      line)
        refused = [e for e in self.token_requests() if e["status"] == 401]
        self.assertTrue(refused)
        self.assertEqual({e["credential"] for e in refused}, {"assertion"})
        time.sleep(2)
        self.assertEqual(self.sent_count(ALICE), before)

        # The agent's certificate registered again: the mail goes.
        self.box.sim_post("/_sim/certificates", {
            "certificates": [self.box.certificate_pem("client")]})
        got = self.wait_one_more(ALICE, before, timeout=90)
        self.assertEqual(got[0]["resource"]["subject"], "after rotation")
        self.assertTrue(self.status()["token"]["ok"])


if __name__ == "__main__":
    main()
