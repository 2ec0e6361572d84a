// Shared by the chat page and the dashboard: the connection badge (#conn)
// and the access-token form (#access). A master started with
// FAENA_API_TOKEN refuses sockets without it; the token the person typed is
// kept for this tab only (sessionStorage).
"use strict";

window.faenaAccess = {
  token: () => sessionStorage.getItem("faena.token") || "",

  setConn(state, label) {
    const conn = document.getElementById("conn");
    conn.dataset.state = state;
    conn.textContent = label;
  },

  /** Shows `socket`'s state on the badge (`connected` as `live`) and asks
   *  for the token when the master wants one; `onToken` runs once one is typed. */
  watch(socket, live, onToken) {
    const set = this.setConn;
    socket.on("connect", () => set("connected", live));
    socket.on("disconnect", () => set("reconnecting", "reconnecting…"));
    socket.io.on("reconnect_attempt", () => set("reconnecting", "reconnecting…"));
    socket.on("connect_error", (err) => {
      // "unauthorized" (proto/src/sio.rs): the client does not retry by itself.
      if (err && err.message === "unauthorized") {
        set("locked", this.token() ? "wrong access token" : "access token needed");
        document.getElementById("access").hidden = false;
        document.getElementById("access-input").focus();
      }
    });
    document.getElementById("access").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("access-input");
      sessionStorage.setItem("faena.token", input.value);
      input.value = "";
      document.getElementById("access").hidden = true;
      set("connecting", "connecting…");
      socket.connect();
      if (onToken) onToken();
    });
  },
};
