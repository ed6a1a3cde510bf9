// Preload (`node -r ./listen-localhost.js main.js`): kinesis-local listens on 0.0.0.0 with no option
// to change it; this makes every TCP server it opens listen on 127.0.0.1 only.
"use strict";
const net = require("net");

const HOST = "127.0.0.1";
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback]): replace or insert the host.
    const rest = args.slice(1);
    if (typeof rest[0] === "string" || rest[0] === undefined || rest[0] === null) rest.shift();
    return listen.call(this, Number(first), HOST, ...rest);
  }
  if (first && typeof first === "object" && first.path === undefined && !("fd" in first) && !("_handle" in first)) {
    return listen.call(this, { ...first, host: HOST }, ...args.slice(1));
  }
  return listen.apply(this, args);
};
