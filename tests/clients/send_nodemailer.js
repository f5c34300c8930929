// Sends one message through the agent with nodemailer, as Nextal's Node.js
// services would. Usage: node send_nodemailer.js PORT USER PASS FROM TO SUBJECT
'use strict';
const nodemailer = require('nodemailer');

async function main() {
  const [port, user, pass, from, to, subject] = process.argv.slice(2);
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: Number(port),
    secure: false,
    ignoreTLS: true, // the agent listens on loopback without TLS
    auth: { user, pass },
  });
  const info = await transport.sendMail({
    from: `"Alice Adams" <${from}>`,
    to,
    subject,
    text: 'Sent with nodemailer.',
    html: '<p>Sent with <b>nodemailer</b>.</p>',
    attachments: [{ filename: 'note.txt', content: 'attached by nodemailer\n' }],
  });
  console.log(JSON.stringify({ response: info.response, accepted: info.accepted }));
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
