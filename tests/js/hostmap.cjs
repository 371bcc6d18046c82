// Preloaded (node --require) into an unmodified client: its connections to the vendor hosts go to a
// local capgate instead, as an /etc/hosts line would send them, with the port of the scheme it used:
// TLS sockets to CAPGATE_HTTPS_PORT, plain ones to CAPGATE_HTTP_PORT. The client's own URLs, host
// names (SNI, Host header) and certificate checks stay as they are; NODE_EXTRA_CA_CERTS trusts the
// test's CA, whose certificate names the vendor hosts.
'use strict';
const net = require('net');
const tls = require('tls');

const hosts = new Set((process.env.CAPGATE_HOSTS || '').split(',').filter(Boolean));
const connect = net.Socket.prototype.connect;

net.Socket.prototype.connect = function (...args) {
  // connect(options[, cb]), connect(port[, host][, cb]), or node's own normalized [options, cb] array
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  const secure = this instanceof tls.TLSSocket;
  const port = secure ? process.env.CAPGATE_HTTPS_PORT : process.env.CAPGATE_HTTP_PORT;
  if (first && typeof first === 'object' && hosts.has(String(first.host).toLowerCase()) && port) {
    first.host = '127.0.0.1';
    first.port = Number(port);
  } else if (typeof first !== 'object' && hosts.has(String(args[1]).toLowerCase()) && port) {
    args[0] = Number(port);
    args[1] = '127.0.0.1';
  }
  return connect.apply(this, args);
};
