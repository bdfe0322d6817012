// The embedding demo (`/demo/inbox`): what a product page does with the feed — take a user
// token its backend minted (here from the URL fragment, which no server sees) and hand it to
// the element. No cookie and no session: the token is the only credential.
import "{{asset:inbox.js}}";

const status = document.getElementById("status");
const inbox = document.getElementById("inbox");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname + location.search);
if (!token) {
  status.textContent = "Open this page as /demo/inbox#token=<user token>.";
} else {
  status.textContent = "Signed in with the token from the link.";
  inbox.addEventListener("notify-inbox-expired", () => {
    status.textContent = "The token expired: open the page with a fresh one.";
  });
  inbox.addEventListener("notify-inbox-error", (e) => {
    status.textContent = `The feed could not be loaded: ${e.detail.message}`;
  });
  inbox.connect({ token });
}
