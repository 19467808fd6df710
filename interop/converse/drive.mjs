// Drives Converse.js 14 in Debian's Chromium (headless, through puppeteer-core) against a
// local Prosody and the echo bot, as a person would: log in, open the chat with the bot
// with OMEMO on, type messages, read the answers from the page.
//
// Input: the JSON in the environment variable CONVERSE_TEST:
//   websocket_url, jid, password, bot   the account and the bot to talk to
//   messages                            the bodies to send, in order
//   expect                              "answers": wait for an encrypted answer to each;
//                                       "refusal": wait for Converse to refuse the bot's
//                                       device (no session can be built with it)
//   timeout_ms                          deadline for the whole run
//   screenshot                          PNG written when the run fails
// Output: one JSON object on the last line of stdout with what the page showed (the chat,
// alerts, the bot's fingerprints from its contact details, the console); the Rust
// test (apps/echo-bot/tests/converse.rs) makes the assertions. Exit code 0 when the awaited
// event happened, 1 otherwise (with the screenshot written).

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'node_modules', 'converse.js', 'dist');
const config = JSON.parse(process.env.CONVERSE_TEST ?? '{}');
const deadline = Date.now() + (config.timeout_ms ?? 60000);
const log = (...args) => process.stderr.write(`[drive] ${args.join(' ')}\n`);

const TYPES = {
    '.js': 'text/javascript',
    '.mjs': 'text/javascript',
    '.css': 'text/css',
    '.wasm': 'application/wasm',
    '.json': 'application/json',
    '.svg': 'image/svg+xml',
    '.woff2': 'font/woff2',
    '.woff': 'font/woff',
    '.ttf': 'font/ttf',
    '.png': 'image/png',
};

// The page: Converse.js with a test plugin that exposes its API for waiting on its events.
const settings = {
    websocket_url: config.websocket_url,
    jid: config.jid,
    password: config.password,
    auto_login: true,
    authentication: 'login',
    discover_connection_methods: false,
    view_mode: 'fullscreen',
    assets_path: '/converse/',
    omemo_default: true,
    allow_non_roster_messaging: true,
    whitelisted_plugins: ['omemo-test-hook'],
    loglevel: 'debug',
    play_sounds: false,
    show_desktop_notifications: false,
};
const page_html = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Converse.js and the echo bot</title>
<link rel="stylesheet" href="/converse/converse.min.css"></head>
<body class="converse-fullscreen"><script type="module">
import converse from '/converse/converse.min.js';
converse.plugins.add('omemo-test-hook', {
    initialize() { window.omemoTestApi = this._converse.api; },
});
converse.initialize(${JSON.stringify(settings)});
</script></body></html>`;

function serve(req, res) {
    const url = new URL(req.url, 'http://localhost');
    // The page lives next to Converse's files: libomemo.js looks for its WebAssembly in the
    // page's directory.
    if (url.pathname === '/converse/' || url.pathname === '/converse/index.html') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(page_html);
        return;
    }
    if (url.pathname.startsWith('/converse/')) {
        const file = path.normalize(path.join(dist, url.pathname.slice('/converse/'.length)));
        if (file.startsWith(dist + path.sep) && fs.existsSync(file) && fs.statSync(file).isFile()) {
            res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
            fs.createReadStream(file).pipe(res);
            return;
        }
    }
    log(`404 ${url.pathname}`);
    res.writeHead(404);
    res.end();
}

const result = { messages: [], console: [], alerts: [], answers: [], fingerprints: [], refused: false, error: null };

function remaining() {
    return Math.max(1, deadline - Date.now());
}

// Every message in the chat with the bot: text, direction and encryption mark.
async function chatMessages(page) {
    return page.$$eval('converse-chats .chat-msg', (els) =>
        els.map((el) => ({
            text: el.querySelector('.chat-msg__text')?.textContent?.trim() ?? '',
            encrypted: el.getAttribute('data-encrypted') === 'true',
            from: el.getAttribute('data-from') ?? '',
            error: el.classList.contains('chat-error'),
        })),
    );
}

async function main() {
    const server = http.createServer(serve);
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'converse-chromium-'));
    const browser = await puppeteer.launch({
        executablePath: '/usr/bin/chromium',
        headless: true,
        userDataDir: profile,
        args: [
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
        ],
    });
    let page;
    try {
        page = await browser.newPage();
        await page.setViewport({ width: 1200, height: 900 });
        page.on('console', async (msg) => {
            // Error objects print as handles; ask the page for their message.
            const parts = await Promise.all(
                msg.args().map((arg) =>
                    arg
                        .evaluate((v) => (v instanceof Error ? `${v.name}: ${v.message}` : String(v)))
                        .catch(() => msg.text()),
                ),
            );
            result.console.push(`${msg.type()}: ${parts.join(' ')}`);
        });
        page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
        await page.goto(`http://localhost:${port}/converse/`, { waitUntil: 'load', timeout: remaining() });
        await page.waitForFunction(() => window.omemoTestApi, { timeout: remaining() });
        // Logged in, with our OMEMO device published.
        await page.evaluate(
            (ms) =>
                Promise.race([
                    window.omemoTestApi.waitUntil('OMEMOInitialized'),
                    new Promise((_, reject) => setTimeout(() => reject(new Error('OMEMO was not initialized')), ms)),
                ]),
            remaining(),
        );
        log('OMEMO initialized');
        // Open the chat with the bot (what "Start a new chat" in the contacts menu does).
        await page.evaluate(
            (bot, ms) =>
                Promise.race([
                    window.omemoTestApi.chats.open(bot, {}, true).then(() => true),
                    new Promise((_, reject) => setTimeout(() => reject(new Error('the chat did not open')), ms)),
                ]),
            config.bot,
            remaining(),
        );
        log('chat open');
        const textarea = 'converse-chats .chat-textarea';
        await page.waitForSelector(textarea, { visible: true, timeout: remaining() });
        // The padlock in the chat toolbar: Converse found the bot's OMEMO device and will
        // encrypt (typing earlier sends the first message in plaintext).
        await page.waitForSelector('converse-chats .toggle-omemo .fa-lock', { timeout: remaining() });
        log('OMEMO on in the chat');

        for (const body of config.messages) {
            await page.focus(textarea);
            await page.keyboard.type(body);
            await page.keyboard.press('Enter');
            if (config.expect === 'refusal') break;
            // As a person would: the next message once this one shows in the chat.
            await page.waitForFunction(
                (body) =>
                    [...document.querySelectorAll('converse-chats .chat-msg .chat-msg__text')].some(
                        (el) => el.textContent.trim() === body,
                    ),
                { timeout: remaining(), polling: 100 },
                body,
            );
            // Converse empties the message field once the message is sent; typing earlier
            // would be wiped.
            await page.waitForFunction(
                (selector) => {
                    const el = document.querySelector(selector);
                    return el && el.value === '' && !el.disabled;
                },
                { timeout: remaining(), polling: 100 },
                textarea,
            );
            log(`sent ${JSON.stringify(body)}`);
        }

        if (config.expect === 'answers') {
            const wanted = config.messages.map((m) => `Your message: ${m}`);
            await page.waitForFunction(
                (wanted) => {
                    const texts = [...document.querySelectorAll('converse-chats .chat-msg .chat-msg__text')].map(
                        (el) => el.textContent.trim(),
                    );
                    return wanted.every((w) => texts.includes(w));
                },
                { timeout: remaining(), polling: 100 },
                wanted,
            );
            // The bot's fingerprint as Converse shows it: the sender's details, OMEMO tab.
            await page.click(`converse-chats .chat-msg[data-from^="${config.bot}/"] a.show-msg-author-modal`);
            await page.waitForSelector('#omemo-tab', { visible: true, timeout: remaining() });
            await page.click('#omemo-tab');
            await page.waitForSelector('converse-omemo-fingerprints code.fingerprint', { timeout: remaining() });
            result.fingerprints = await page.$$eval('converse-omemo-fingerprints code.fingerprint', (els) =>
                els.map((el) => el.textContent.trim()),
            );
        } else {
            // Converse tells the user with an alert that it has no device to encrypt for.
            await page.waitForFunction(
                () => /no devices found to which we can send an OMEMO encrypted message/i.test(document.body.innerText),
                { timeout: remaining(), polling: 100 },
            );
            result.refused = true;
        }
        result.alerts = await page.$$eval('.modal.show .modal-body', (els) => els.map((el) => el.innerText.trim()));
        result.messages = await chatMessages(page);
        result.answers = result.messages.filter((m) => m.text.startsWith('Your message: '));
        return true;
    } catch (e) {
        result.error = String(e?.stack ?? e);
        if (page) {
            result.messages = await chatMessages(page).catch(() => []);
            result.alerts = await page
                .$$eval('.modal.show .modal-body', (els) => els.map((el) => el.innerText.trim()))
                .catch(() => []);
            if (config.screenshot) {
                fs.mkdirSync(path.dirname(config.screenshot), { recursive: true });
                await page.screenshot({ path: config.screenshot, fullPage: true }).catch(() => {});
            }
        }
        return false;
    } finally {
        await browser.close().catch(() => {});
        server.close();
        fs.rmSync(profile, { recursive: true, force: true });
    }
}

// The report can be larger than a pipe's buffer: exit once it is written.
function report(code) {
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
}
const timer = setTimeout(() => {
    result.error = 'the run overstayed its deadline';
    report(1);
}, remaining() + 15000);
const ok = await main();
clearTimeout(timer);
report(ok ? 0 : 1);
