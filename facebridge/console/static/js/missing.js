// The not-found page needs no data; it only offers the sign-in like every console page.
import { start } from "./ui.js";

start(async () => {});
