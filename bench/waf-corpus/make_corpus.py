#!/usr/bin/env python3
"""Write the benign request corpus: crates/waf/tests/data/benign-corpus.jsonl.

Ordinary traffic to Node.js JSON APIs (a shop, user profiles, a developer
forum, support tickets, search, GraphQL, webhooks, ...), written by hand for
this project, to count the false positives of a WAF in block mode (issue #15).
None of it is meant to look like an attack or crafted to avoid one: forum posts
quote SQL, shell and HTML because developer forums are full of them, names
have apostrophes because people's names do.

One JSON object per line:
  {"id", "method", "path", "query", "content_type", "body"}
An id's first word is the kind of request: shop (products, cart, orders,
reviews), user (sign-ups, profiles, addresses), forum (threads and replies,
many quoting code), search, list (pagination, sorting and filter query
strings), url (URLs as values), enc (base64, data: URIs, JWT-shaped tokens,
keys, digests), ticket (support tickets: file paths, logs), doc (CSV,
markdown), graphql, chat, misc (calendar, i18n, settings, ...), form
(application/x-www-form-urlencoded bodies), get (plain reads).
`query` is the raw query string (no "?"), `body` the raw body text. JSON bodies
are serialised as JSON.stringify does (compact, non-ASCII kept as UTF-8); form
bodies and query strings are encoded as URLSearchParams does.

Deterministic: the only randomness (UUIDs, key bytes, digests) comes from a
seeded generator, so running it again writes the same file.

    python3 bench/waf-corpus/make_corpus.py [--out PATH]     (Python 3.9+)
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import struct
import sys
import uuid
import zlib

RNG = random.Random(15)  # issue #15

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "crates", "waf", "tests", "data", "benign-corpus.jsonl")

CORPUS = []


# ---------------------------------------------------------------- encoding


def urlsp(s):
    """One component as URLSearchParams serialises it (WHATWG
    application/x-www-form-urlencoded): alphanumerics and *-._ as they are,
    space as +, everything else %XX of its UTF-8 bytes."""
    out = []
    for ch in str(s):
        if ch.isascii() and (ch.isalnum() or ch in "*-._"):
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend("%%%02X" % b for b in ch.encode("utf-8"))
    return "".join(out)


def qs(pairs):
    """A query string or form body from (name, value) pairs or a dict."""
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    return "&".join(urlsp(k) + "=" + urlsp(v) for k, v in pairs)


def _as_js(value):
    # JavaScript has one number type: JSON.stringify(249.0) is "249".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_js(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_js(v) for v in value]
    return value


def js(value):
    """JSON.stringify(value)."""
    return json.dumps(_as_js(value), ensure_ascii=False, separators=(",", ":"))


def add(rid, method, path, query="", json_body=None, form=None, raw=None, ctype=None):
    body, content_type = "", ""
    if json_body is not None:
        body, content_type = js(json_body), "application/json"
    elif form is not None:
        body, content_type = qs(form), "application/x-www-form-urlencoded"
    elif raw is not None:
        body, content_type = raw, ctype or ""
    if isinstance(query, (list, dict)):
        query = qs(query)
    CORPUS.append(
        {
            "id": rid,
            "method": method,
            "path": path,
            "query": query,
            "content_type": content_type,
            "body": body,
        }
    )


# ------------------------------------------------------- deterministic data


def uid():
    return str(uuid.UUID(int=RNG.getrandbits(128), version=4))


def hexstr(nbytes):
    return "%0*x" % (nbytes * 2, RNG.getrandbits(nbytes * 8))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like(payload, key=b"corpus-not-a-secret"):
    head = b64url(js({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(js(payload).encode())
    sig = b64url(hmac.new(key, (head + "." + body).encode(), hashlib.sha256).digest())
    return head + "." + body + "." + sig


def png(width, height, pixel):
    """A real PNG (8-bit RGB), pixel(x, y) -> (r, g, b)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def data_uri_png(width, height, pixel):
    return "data:image/png;base64," + base64.b64encode(png(width, height, pixel)).decode()


# A 1x1 transparent GIF, built from its fields.
GIF_1X1 = (
    b"GIF89a"
    + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
    + b"\x00\x00\x00\xff\xff\xff"
    + b"\x21\xf9\x04\x01\x00\x00\x00\x00"
    + b"\x2c"
    + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    + b"\x02\x02\x44\x01\x00"
    + b"\x3b"
)

SVG_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" height="24">'
    '<circle cx="12" cy="12" r="10" fill="#2f855a"/>'
    '<path d="M7 12l3 3 7-7" stroke="#fff" stroke-width="2" fill="none"/></svg>'
)

TINY_PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
    b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


def ssh_pubkey(comment):
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + RNG.randbytes(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " " + comment


# =============================================================== the corpus
# --------------------------------------------------------------- the shop

PRODUCTS = [
    ("Ergonomic Mesh Office Chair", "furniture", 249.00,
     'Breathable mesh back, 4" adjustable armrests & lumbar support. Seat height 17"–21". '
     "Holds up to 300 lbs. Ships flat-packed; assembly takes about 20 minutes."),
    ('27" 4K IPS Monitor', "electronics", 329.99,
     "99% sRGB, 60 Hz, USB-C with 65W power delivery & HDMI 2.0. VESA 100x100 mount. "
     "Includes a 1.5 m USB-C cable."),
    ("Chef's Knife 8\"", "kitchen", 59.50,
     "High-carbon stainless steel, full tang, 8\" blade. Hand wash only; don't put it in the "
     "dishwasher! Comes with a magnetic blade guard."),
    ("Organic Cotton T-Shirt", "clothing", 24.00,
     "100% organic cotton, pre-shrunk 👕 Sizes XS–XXL. Model is 6'1\" and wears a size M."),
    ("House Blend Coffee Beans 1kg", "grocery", 18.90,
     '"The best coffee I\'ve brewed at home" – a very happy customer ☕ Medium roast, '
     "notes of cocoa & hazelnut. Roasted on Mondays, shipped on Tuesdays."),
    ("Kids' Rain Boots", "clothing", 32.00,
     "Waterproof rubber boots for little feet (sizes 10–13). Non-slip sole & easy pull-on handles. "
     "Available in yellow, navy and frog green 🐸"),
    ("Nesting Side Tables (Set of 3)", "furniture", 149.00,
     'Three tables: 16", 18" & 20" high. Solid oak veneer on MDF. Assembly required (tools included).'),
    ("Stainless Steel Water Bottle 750ml", "outdoors", 22.50,
     "Keeps drinks cold for 24h and hot for 12h. BPA-free lid. Save 20% when you buy 2 or more!"),
    ("Wireless Earbuds Pro", "electronics", 89.00,
     "Active noise cancelling, 30h total battery with the case, IPX4 sweat resistance. "
     "Bluetooth 5.3 & multipoint pairing."),
    ("Bamboo Cutting Board", "kitchen", 27.95,
     'Large 18" x 12" x 1" board with juice groove. Oil it once a month with food-safe mineral oil.'),
    ('1/2" Drive Torque Wrench', "tools", 64.00,
     "20–150 ft·lb range, ±3% accuracy, reversible ratchet head. Calibration certificate included."),
    ("Leather Bifold Wallet", "accessories", 45.00,
     'Vintage-style full-grain leather, "Made in Italy". Fits 8 cards + cash. RFID-blocking lining.'),
    ("抹茶パウダー 100g", "grocery", 16.80,
     "京都府宇治産の一番茶を使用した抹茶です。お菓子作りやラテにおすすめ。開封後は冷蔵庫で保存してください。"),
    ("Wollpullover Herren", "clothing", 79.00,
     "Größe: M – Farbe: Schwarz/Weiß. Material: 80 % Wolle, 20 % Polyamid. Handwäsche bei 30 °C."),
    ("Crème hydratante aloe vera 50 ml", "beauty", 14.90,
     "Crème légère à l'aloe vera pour peaux sèches & sensibles. Sans parfum, testée sous contrôle "
     "dermatologique. « Ma peau n'a jamais été aussi douce » — Claire, 34 ans."),
    ("Cafetera italiana 6 tazas", "kitchen", 29.99,
     "Acero inoxidable, apta para inducción. ¡Prepara un café intenso en 5 minutos! "
     "Incluye junta de repuesto."),
    ("Expandable Garden Hose 50ft", "garden", 38.00,
     '50 ft (15 m) when full, 5/8" diameter, solid brass fittings & 8-pattern spray nozzle.'),
    ("Men's Trail Running Shoes", "footwear", 119.00,
     "Size 10.5 US / 44 EU. 6 mm drop, Vibram® outsole, reflective heel tab. Runs half a size small."),
    ("MagSafe Case for iPhone 15 Pro", "electronics", 19.99,
     'Slim case for the 6.1" model with raised camera lip. Drop-tested to 6 ft (1.8 m).'),
    ("RGB LED Strip 5m", "home", 23.49,
     "16.4ft/5m, 12V DC, 300 LEDs. App & remote control; works with Alexa/Google Home. "
     "Cut every 3 LEDs along the marked line."),
    ("Travel Backpack 35L", "bags", 98.00,
     '<p>Our <strong>bestselling</strong> carry-on backpack, now in 3 colours.</p>'
     '<ul><li>Padded sleeve fits a 15" laptop</li><li>Water-resistant 600D polyester</li>'
     "<li>Lockable zips &amp; hidden passport pocket</li></ul>"),
    ("Ceramic Pour-Over Set", "kitchen", 42.00,
     "## What's in the box\n\n- Ceramic dripper (size 02)\n- 40 paper filters\n- 600 ml glass server\n\n"
     "**Tip:** rinse the filter with hot water first to remove the paper taste."),
    ("Yoga Mat 6mm", "sports", 34.99,
     "Non-slip TPE, 72\" x 24\" x 1/4\". Double-sided: one side for grip, one for cushioning. "
     "Carry strap included 🧘"),
    ("Cast Iron Skillet 10.25\"", "kitchen", 39.00,
     "Pre-seasoned & ready to use. Works on gas, electric, induction, oven and campfire. "
     "Don't soak it; dry it on the stove & wipe with a little oil."),
    ("Noise Machine for Sleep", "home", 29.00,
     "20 sounds (white noise, rain, fan...), timer 30/60/90 min or all night. USB-C powered."),
    ("A5 Dotted Notebook", "stationery", 12.50,
     "160 pages of 100 gsm paper — no ghosting with fountain pens. Lay-flat binding, numbered pages & "
     "2 ribbon markers."),
    ("Smart Plug (2-pack)", "home", 21.99,
     "Wi-Fi 2.4 GHz only. Energy monitoring, schedules & away mode. Max load 10A / 2300W."),
    ("Dog Harness No-Pull", "pets", 27.00,
     "Sizes S/M/L. Front & back leash clips, reflective stitching. Measure your dog's chest girth "
     "behind the front legs before ordering 🐕"),
    ("Electric Kettle 1.7L", "kitchen", 49.00,
     "Variable temperature: 70°, 80°, 90° & 100 °C presets. Keep-warm for 30 min. Auto shut-off."),
    ("Linen Duvet Cover — Queen", "bedding", 139.00,
     "Stonewashed 100% French flax linen. 90\" x 90\", coconut-shell buttons, corner ties. "
     "Gets softer with every wash."),
]

for i, (name, category, price, desc) in enumerate(PRODUCTS, 1):
    sku = "%s-%04d" % (category[:3].upper(), 100 + i * 7)
    add(
        "shop-product-create-%02d" % i,
        "POST",
        "/api/admin/products",
        json_body={
            "name": name,
            "sku": sku,
            "category": category,
            "price": {"amount": price, "currency": "USD"},
            "description": desc,
            "tags": [category, "new-arrival"] + (["sale"] if i % 4 == 0 else []),
            "stock": (i * 13) % 70,
            "published": i % 5 != 0,
        },
    )

add("shop-product-patch-price", "PATCH", "/api/admin/products/prd_83kd92", json_body={
    "price": {"amount": 19.99, "currency": "USD"},
    "sale": {"percent_off": 15, "starts_at": "2024-11-29T00:00:00Z", "ends_at": "2024-12-02T23:59:59Z"},
})
add("shop-product-patch-desc", "PATCH", "/api/admin/products/prd_1f0a77", json_body={
    "description": "Now with a longer 2 m cable & braided jacket. Same great sound.",
    "seo": {"title": "Braided USB-C Cable 2m | Fast Charging 60W",
            "meta_description": "Durable braided USB-C to USB-C cable, 2 m, 60W PD, 480 Mbps. Free shipping over $35."},
})
add("shop-product-variants", "PUT", "/api/admin/products/prd_83kd92/variants", json_body=[
    {"sku": "TSH-ORG-S-NVY", "options": {"size": "S", "color": "Navy"}, "stock": 12},
    {"sku": "TSH-ORG-M-NVY", "options": {"size": "M", "color": "Navy"}, "stock": 30},
    {"sku": "TSH-ORG-L-NVY", "options": {"size": "L", "color": "Navy"}, "stock": 0, "backorder": True},
    {"sku": "TSH-ORG-M-OAT", "options": {"size": "M", "color": "Oatmeal"}, "stock": 8},
])
add("shop-product-bulk-stock", "PATCH", "/api/admin/inventory", json_body={
    "updates": [{"sku": "KIT-0121", "delta": -2, "reason": "damaged in warehouse"},
                {"sku": "ELE-0114", "delta": 40, "reason": "PO #20240317 received"},
                {"sku": "GRO-0135", "delta": -1, "reason": "customer return – opened bag"}],
})
add("shop-category-create", "POST", "/api/admin/categories", json_body={
    "name": "Home & Garden", "slug": "home-garden", "parent_id": None,
    "description": "Everything for your home, patio & garden — from LED strips to hoses.",
})

CART_ITEMS = [
    ("prd_83kd92", 2, {"size": "M", "color": "Navy"}),
    ("prd_1f0a77", 1, {}),
    ("prd_a93kd1", 3, {"grind": "whole bean"}),
    ("prd_77ab3c", 1, {"engraving": "For Mum ♥ Christmas 2024"}),
    ("prd_0c3d9e", 1, {"gift_wrap": True, "gift_message": "Happy birthday, Seán! Don't spend it all at once 😉"}),
]
for i, (pid, qty, opts) in enumerate(CART_ITEMS, 1):
    add("shop-cart-add-%d" % i, "POST", "/api/cart/items",
        json_body={"product_id": pid, "quantity": qty, "options": opts})
add("shop-cart-update", "PATCH", "/api/cart/items/ci_55", json_body={"quantity": 4})
add("shop-coupon", "POST", "/api/cart/coupon", json_body={"code": "SPRING-20"})
add("shop-cart-get", "GET", "/api/cart", "")
add("shop-shipping-quote", "POST", "/api/shipping/quote", json_body={
    "destination": {"country": "IE", "postcode": "D02 X285", "city": "Dublin"},
    "items": [{"sku": "FUR-0114", "weight_kg": 14.2, "dimensions_cm": [66, 60, 18]}],
})

REVIEWS = [
    (5, "Exactly as described!", "Arrived in 2 days, well packed. The 27\" screen is gorgeous & the USB-C "
     "charging means one cable for my laptop. 10/10 would buy again."),
    (4, "Good, but runs small", "Love the colour. I'm usually a 10 but needed a 10.5 — order half a size up."),
    (2, "Handle broke after a week", "The lid's handle snapped off on day 8. Customer service were nice "
     "about it & sent a replacement, so +1 star for that."),
    (5, "Best purchase this year 🙌", "I've tried 3 other chairs. This is the only one that doesn't hurt my back "
     "after an 8-hour day. Took 25 min to assemble (not 20 😅)."),
    (3, "It's OK", "Does what it says. Wish it came with a case; the \"premium\" packaging is just a box."),
    (5, "Perfect gift", "Bought it for my dad's 70th & he hasn't stopped talking about it."),
    (1, "Not for sensitive skin", "Made my cheeks red within an hour. Returned it — refund took 5 days."),
    (4, "Great coffee, slow shipping", "Beans are fresh (roast date was 3 days before delivery) but "
     "the parcel sat in a depot for a week."),
    (5, "Très bon produit", "Livraison rapide, produit conforme à la description. Je recommande !"),
    (5, "Sehr zufrieden", "Top Qualität, passt perfekt. Würde ich jederzeit wieder kaufen."),
    (4, "很好用", "质量不错，物流也很快。就是颜色比图片稍微深一点。"),
    (5, "Отличный нож", "Очень острый, удобно лежит в руке. Рекомендую!"),
    (3, "meh", "it's fine i guess... expected more for $$$"),
    (5, "Works with Home Assistant", "Flashed nothing, just added it through the Tuya integration. "
     "Energy readings match my clamp meter within ~2%."),
]
for i, (rating, title, text) in enumerate(REVIEWS, 1):
    add("shop-review-%02d" % i, "POST", "/api/products/prd_%05d/reviews" % (1000 + i * 37),
        json_body={"rating": rating, "title": title, "body": text, "recommend": rating >= 4})

add("shop-review-helpful", "POST", "/api/reviews/rv_9931/votes", json_body={"helpful": True})
add("shop-question", "POST", "/api/products/prd_83kd92/questions", json_body={
    "question": "Does the 35L version fit under a Ryanair seat? Their limit is 40 x 20 x 25 cm."})
add("shop-answer", "POST", "/api/questions/q_412/answers", json_body={
    "answer": "Not when it's full — it's 55 x 35 x 20 cm. Packed light & compressed it just about fits "
              "the 40x20x25 sizer, but I'd pay for priority boarding to be safe."})

ORDER_NOTES = [
    "Please leave at the back door, gate code #4821.",
    "Ring twice – the doorbell's broken. If no one's home, leave with No. 14.",
    "Gift! Please don't include the receipt.",
    "Deliver after 6pm if possible; we're both at work 9–5.",
    "",
    "Apt 4B, buzzer says \"Kowalski/Nguyen\". Use the side entrance on Elm St.",
]
ADDRESSES = [
    {"name": "Siobhán O'Brien", "line1": "12 O'Connell Street Upper", "line2": "Apartment 3",
     "city": "Dublin", "postcode": "D01 F5P2", "country": "IE", "phone": "+353 87 123 4567"},
    {"name": "Marco D'Angelo", "line1": "Via dell'Orso, 28", "line2": "", "city": "Milano",
     "postcode": "20121", "country": "IT", "phone": "+39 347 555 0192"},
    {"name": "Anna Kowalski", "line1": "1540 Elm St, Apt 4B", "line2": "", "city": "Springfield",
     "region": "IL", "postcode": "62704", "country": "US", "phone": "(555) 010-4477"},
    {"name": "山田 太郎", "line1": "世田谷区桜丘3-14-7", "line2": "メゾン桜 201", "city": "東京都",
     "postcode": "156-0054", "country": "JP", "phone": "+81 90-1234-5678"},
    {"name": "Ольга Смирнова", "line1": "ул. Садовая, д. 5, кв. 12", "line2": "", "city": "Санкт-Петербург",
     "postcode": "190000", "country": "RU", "phone": "+7 (912) 345-67-89"},
    {"name": "Priya Sharma", "line1": "Flat 302, Sunrise Apartments, 5th Cross", "line2": "Indiranagar",
     "city": "Bengaluru", "region": "KA", "postcode": "560038", "country": "IN", "phone": "+91 98765 43210"},
]
for i, (addr, note) in enumerate(zip(ADDRESSES, ORDER_NOTES), 1):
    add("shop-order-create-%d" % i, "POST", "/api/orders", json_body={
        "cart_id": "cart_%s" % hexstr(6),
        "shipping_address": addr,
        "billing_same_as_shipping": i % 2 == 1,
        "shipping_method": ["standard", "express", "pickup"][i % 3],
        "delivery_notes": note,
        "idempotency_key": uid(),
    })
add("shop-order-cancel", "POST", "/api/orders/ord_20240511_0042/cancel", json_body={
    "reason": "ordered_by_mistake", "comment": "I ordered the 10\" skillet but meant the 12\" one, sorry!"})
add("shop-order-return", "POST", "/api/orders/ord_20240422_0917/returns", json_body={
    "items": [{"line_id": 2, "quantity": 1, "reason": "wrong_size"}],
    "comment": "Fits like a 9.5, not a 10.5. I'd like to exchange for size 11 if you have it.",
    "refund_method": "original_payment"})
add("shop-order-status", "PATCH", "/api/admin/orders/ord_20240511_0042", json_body={
    "status": "shipped", "carrier": "DHL", "tracking_number": "JD014600006543210987",
    "tracking_url": "https://www.dhl.com/en/express/tracking.html?AWB=1234567890&brand=DHL"})
add("shop-payment-intent", "POST", "/api/payments/intents", json_body={
    "amount": 4999, "currency": "eur", "order_id": "ord_20240511_0042",
    "metadata": {"customer_email": "marco.dangelo@example.it", "campaign": "spring-sale"}})
add("shop-gift-card", "POST", "/api/gift-cards", json_body={
    "amount": 50, "currency": "GBP", "recipient_email": "nan@example.co.uk",
    "message": "Happy retirement, Nan! Treat yourself to something lovely 💐 – love, Jack & Ellie xx",
    "deliver_on": "2024-06-21"})
add("shop-wishlist", "PUT", "/api/wishlists/default", json_body={
    "name": "Birthday ideas 🎂", "items": ["prd_83kd92", "prd_77ab3c", "prd_0c3d9e"], "public": True})
add("shop-stock-alert", "POST", "/api/products/prd_1f0a77/stock-alerts", json_body={
    "email": "renee.lheureux@example.ca", "variant": "M / Oatmeal"})

# ----------------------------------------------------------- user profiles

PEOPLE = [
    ("Siobhán O'Brien", "siobhan.obrien@example.ie", "Europe/Dublin", "she/her",
     "Platform engineer in Dublin. Kubernetes by day, sea swimming by morning 🌊"),
    ("Marco D'Angelo", "marco.dangelo@example.it", "Europe/Rome", "he/him",
     "Backend dev @ a fintech in Milan. I write Go & TypeScript; opinions are my own."),
    ("Ngozi Okonkwo-Adeyemi", "ngozi.oa@example.ng", "Africa/Lagos", "she/her",
     "Product designer. Previously at two startups you haven't heard of (yet)."),
    ("José María García-López", "jm.garcia@example.es", "Europe/Madrid", "",
     "Desarrollador full-stack. Me gustan el café, la montaña y los tests que pasan a la primera."),
    ("王小明", "xiaoming.wang@example.cn", "Asia/Shanghai", "",
     "前端工程师，喜欢 React 和 TypeScript。业余时间跑步、拍照。"),
    ("李娜", "li.na@example.cn", "Asia/Shanghai", "她",
     "数据分析师 | SQL 和 Python 爱好者 | 坐标上海"),
    ("محمد العلي", "m.alali@example.sa", "Asia/Riyadh", "",
     "مهندس برمجيات في الرياض. أحب القهوة العربية والبرمجة مفتوحة المصدر."),
    ("فاطمة الزهراء بنعلي", "fatima.benali@example.ma", "Africa/Casablanca", "",
     "مصممة واجهات مستخدم. أكتب عن إمكانية الوصول والتصميم باللغة العربية."),
    ("Александр Петров", "a.petrov@example.ru", "Europe/Moscow", "",
     "Разработчик на Node.js. Люблю шахматы и длинные прогулки."),
    ("Ольга Смирнова", "olga.smirnova@example.ru", "Europe/Moscow", "",
     "QA-инженер. Нахожу баги раньше пользователей 🐞"),
    ("Γιώργος Παπαδόπουλος", "g.papadopoulos@example.gr", "Europe/Athens", "",
     "Μηχανικός λογισμικού στην Αθήνα. Μου αρέσουν τα βιβλία και η θάλασσα."),
    ("Ελένη Κωνσταντίνου", "eleni.k@example.gr", "Europe/Athens", "",
     "Data scientist · Θεσσαλονίκη · R, Python & λίγο SQL"),
    ("प्रिया शर्मा", "priya.sharma@example.in", "Asia/Kolkata", "she/her",
     "सॉफ्टवेयर इंजीनियर, बेंगलुरु। मुझे नई तकनीकें सीखना पसंद है।"),
    ("राहुल वर्मा", "rahul.verma@example.in", "Asia/Kolkata", "he/him",
     "Android developer & weekend cricketer 🏏"),
    ("김민준", "minjun.kim@example.kr", "Asia/Seoul", "",
     "서울에서 일하는 백엔드 개발자입니다. 커피와 고양이를 좋아해요."),
    ("山田 太郎", "taro.yamada@example.jp", "Asia/Tokyo", "",
     "東京でエンジニアをしています。趣味はカメラと旅行です。"),
    ("Zoë Ångström", "zoe.angstrom@example.se", "Europe/Stockholm", "they/them",
     "Accessibility consultant. Ask me about screen readers & colour contrast."),
    ("Łukasz Wiśniewski", "lukasz.w@example.pl", "Europe/Warsaw", "",
     "DevOps @ Kraków. Terraform, Ansible, żurek."),
    ("Nguyễn Thị Minh Khai", "minhkhai.nguyen@example.vn", "Asia/Ho_Chi_Minh", "",
     "Kỹ sư phần mềm tại TP. Hồ Chí Minh. Thích đọc sách và nấu ăn."),
    ("Bjørn Ødegård", "bjorn.odegard@example.no", "Europe/Oslo", "",
     "Fjellvandrer og Rust-entusiast."),
    ("Aoife Ní Bhriain", "aoife.nibhriain@example.ie", "Europe/Dublin", "",
     "Múinteoir & web developer. Tá Gaeilge agam 🇮🇪"),
    ("Mary-Kate O'Neil", "mk.oneil@example.com", "America/New_York", "she/her",
     "PM at a healthtech startup. Former nurse. Mom of 2 & 1 very loud beagle."),
    ("Renée L'Heureux", "renee.lheureux@example.ca", "America/Toronto", "elle",
     "Développeuse web à Montréal. J'aime le hockey, le sirop d'érable et le CSS bien rangé."),
    ("Hélène d'Arcy", "helene.darcy@example.fr", "Europe/Paris", "",
     "Rédactrice technique. J'écris la doc que personne ne lit (mais tout le monde devrait !)."),
    ("Tevita Fifita", "tevita.f@example.to", "Pacific/Tongatapu", "",
     "Rugby coach & part-time Flutter dev."),
    ("Daniel O'Connor-Smith", "dan.ocs@example.co.uk", "Europe/London", "he/him",
     "SRE. On call more often than I'd like. Opinions are my cat's."),
    ("Chloé N'Diaye", "chloe.ndiaye@example.sn", "Africa/Dakar", "",
     "Ingénieure data. Dakar ↔ Paris."),
    ("Ana Luísa Conceição", "analuisa.c@example.br", "America/Sao_Paulo", "ela/dela",
     "Dev front-end em São Paulo. Café, código e capoeira."),
    ("Dmitri Ivanov-O'Hara", "dmitri.ioh@example.com", "America/Chicago", "",
     "Half Russian, half Irish, fully caffeinated."),
    ("Kwame Mensah", "kwame.mensah@example.gh", "Africa/Accra", "",
     "Building payment rails for West Africa. Previously banking ops."),
]

for i, (name, email, tz, pronouns, bio) in enumerate(PEOPLE, 1):
    first = name.split(" ")[0]
    add("user-signup-%02d" % i, "POST", "/api/auth/signup", json_body={
        "name": name, "email": email, "password": "%s-%s-%d!" % ("correct-horse", first[:3].lower() or "x", i * 17),
        "accept_terms": True, "marketing_opt_in": i % 3 == 0, "locale": tz.split("/")[0].lower()[:2]})
    add("user-profile-%02d" % i, "PATCH", "/api/users/me", json_body={
        "display_name": name, "bio": bio, "pronouns": pronouns, "timezone": tz,
        "website": "https://%s.example.dev" % ("user%d" % i),
        "social": {"github": "dev%03d" % (i * 7), "mastodon": "@dev%03d@hachyderm.example" % (i * 7)}})

add("user-address-1", "PUT", "/api/users/me/addresses/2", json_body=ADDRESSES[0])
add("user-address-2", "POST", "/api/users/me/addresses", json_body={
    "name": "محمد العلي", "line1": "شارع الملك فهد، حي العليا", "line2": "مبنى 12، الدور 3",
    "city": "الرياض", "postcode": "12211", "country": "SA", "phone": "+966 50 123 4567"})
add("user-address-3", "POST", "/api/users/me/addresses", json_body={
    "name": "Γιώργος Παπαδόπουλος", "line1": "Οδός Ερμού 45", "city": "Αθήνα", "postcode": "105 63",
    "country": "GR", "phone": "+30 21 0123 4567"})
add("user-address-4", "POST", "/api/users/me/addresses", json_body={
    "name": "Anna Kowalski", "line1": "P.O. Box 1207", "city": "Anchorage", "region": "AK",
    "postcode": "99501-1207", "country": "US", "phone": "+1 907-555-0133",
    "instructions": "P.O. boxes only — no couriers, please use USPS."})
add("user-phone", "PATCH", "/api/users/me/phone", json_body={"phone": "+44 20 7946 0958", "sms_opt_in": True})
add("user-prefs", "PUT", "/api/users/me/preferences", json_body={
    "theme": "dark", "language": "pt-BR", "date_format": "dd/MM/yyyy", "currency": "BRL",
    "notifications": {"email": {"digest": "weekly", "mentions": True}, "push": {"mentions": True, "likes": False}}})
add("user-emergency-contact", "PUT", "/api/users/me/emergency-contact", json_body={
    "name": "Seán Ó Súilleabháin", "relationship": "partner", "phone": "+353 86 765 4321"})
add("user-change-email", "POST", "/api/users/me/email", json_body={
    "new_email": "mk.oneil+work@example.com", "current_password": "Tr0ub4dor&3"})
add("user-change-password", "POST", "/api/users/me/password", json_body={
    "current_password": "correct-horse-battery-staple", "new_password": "P@ssw0rd-is-not-a-good-one-2024!"})
add("user-ssh-key", "POST", "/api/users/me/ssh-keys", json_body={
    "title": "work laptop (2024)", "key": ssh_pubkey("siobhan@thinkpad-x1")})
add("user-ssh-key-2", "POST", "/api/users/me/ssh-keys", json_body={
    "title": "Marco's MacBook", "key": ssh_pubkey("marco@MacBook-Pro.local")})
add("user-lookup", "GET", "/api/users", qs({"search": "o'brien", "limit": 10}))
add("user-lookup-2", "GET", "/api/users", qs({"search": "d'angelo"}))
add("user-lookup-3", "GET", "/api/users", qs({"search": "王"}))
add("user-by-username", "GET", "/api/users/by-username/jose.garcia", "")
add("user-mention-autocomplete", "GET", "/api/mentions", qs({"prefix": "ana", "channel": "general"}))
add("user-team-invite", "POST", "/api/teams/tm_42/invites", json_body={
    "emails": ["chloe.ndiaye@example.sn", "kwame.mensah@example.gh", "li.na@example.cn"],
    "role": "member", "message": "Hey! Join us on the new workspace — we're moving off the old one on Friday."})
add("user-export-request", "POST", "/api/users/me/data-export", json_body={
    "format": "json", "include": ["profile", "orders", "reviews", "messages"]})
add("user-delete-account", "POST", "/api/users/me/delete", json_body={
    "reason": "other", "feedback": "Nothing wrong with the app, I'm just cutting down on subscriptions. Thanks!"})

# ------------------------------------------------------------ forum (code)

FORUM_THREADS = [
    ("How do I get the id of the row I just inserted in Postgres?", ["postgresql", "node-postgres"],
     "I'm using `pg` with Express. After\n\n```js\nawait client.query('INSERT INTO orders (user_id, total) VALUES ($1, $2)', [userId, total]);\n```\n\n"
     "how do I get the new order's id without a second query?"),
    ("SQL basics: filtering rows with WHERE", ["sql", "tutorial", "beginners"],
     "Part 2 of my SQL-for-beginners series.\n\nTo fetch one user's name by id:\n\n```sql\nSELECT name FROM users WHERE id = 1;\n```\n\n"
     "You can combine conditions with `AND` / `OR`:\n\n```sql\nSELECT name, email FROM users WHERE country = 'IE' AND created_at > '2024-01-01';\n```\n\n"
     "Next time: ORDER BY and LIMIT."),
    ("LEFT JOIN vs INNER JOIN — when does it matter?", ["sql", "joins"],
     "These two return different counts for me:\n\n```sql\nSELECT c.name, COUNT(o.id)\nFROM customers c\nLEFT JOIN orders o ON o.customer_id = c.id\nGROUP BY c.name;\n```\n\n"
     "vs the same with `INNER JOIN`. I expected the same number of rows. Why are customers with no orders missing in the second one?"),
    ("Why is my GROUP BY query so slow?", ["postgresql", "performance"],
     "Table has ~12M rows. This takes 9 seconds:\n\n```sql\nSELECT date_trunc('day', created_at) AS day, sum(amount)\nFROM payments\nWHERE merchant_id = 42\nGROUP BY 1\nORDER BY 1 DESC;\n```\n\n"
     "EXPLAIN says `Seq Scan on payments`. I have an index on `created_at`. Do I need a composite one on `(merchant_id, created_at)`?"),
    ("PSA: please stop building queries with string concatenation", ["security", "node", "sql"],
     "Saw this in a code review today:\n\n```js\nconst rows = await db.query(\"SELECT * FROM users WHERE email = '\" + req.body.email + \"'\");\n```\n\n"
     "Use parameters instead, the driver escapes for you:\n\n```js\nconst rows = await db.query('SELECT * FROM users WHERE email = $1', [req.body.email]);\n```\n\n"
     "Same goes for ORMs' raw query helpers."),
    ("Deleting duplicate rows but keeping the newest", ["sql", "mysql"],
     "I have duplicate emails in `subscribers`. Is this safe to run in production?\n\n```sql\nDELETE s1 FROM subscribers s1\nJOIN subscribers s2 ON s1.email = s2.email AND s1.id < s2.id;\n```\n\n"
     "Should I wrap it in a transaction first?"),
    ("Migration: adding a NOT NULL column to a big table", ["postgresql", "migrations"],
     "Our migration does\n\n```sql\nALTER TABLE orders ADD COLUMN currency char(3) NOT NULL DEFAULT 'EUR';\n```\n\n"
     "On Postgres 11+ this is instant, right? Or will it rewrite the table and lock it?"),
    ("UNION vs UNION ALL for combining two reports", ["sql"],
     "```sql\nSELECT id, 'invoice' AS kind, created_at FROM invoices\nUNION ALL\nSELECT id, 'credit_note', created_at FROM credit_notes\nORDER BY created_at DESC\nLIMIT 50;\n```\n\n"
     "Is UNION ALL correct here? I don't need to remove duplicates because ids come from different tables."),
    ("Array.reduce explained with a shopping cart", ["javascript", "tutorial"],
     "```js\nconst cart = [\n  { name: 'Mug', price: 12.5, qty: 2 },\n  { name: 'Tea', price: 4.99, qty: 3 },\n];\n\n"
     "const total = cart.reduce((sum, item) => sum + item.price * item.qty, 0);\nconsole.log(total.toFixed(2)); // \"39.97\"\n```\n\n"
     "The second argument (`0`) is the starting value. Forget it and the first item object becomes `sum`!"),
    ("fetch() doesn't reject on 404?", ["javascript", "fetch"],
     "This never hits my catch:\n\n```js\ntry {\n  const res = await fetch(`/api/users/${id}`);\n  const user = await res.json();\n} catch (err) {\n  console.error('failed', err);\n}\n```\n\n"
     "Turns out fetch only rejects on network errors. You have to check `res.ok` yourself: `if (!res.ok) throw new Error(res.status)`."),
    ("Reading a cart from localStorage safely", ["javascript", "browser"],
     "```js\nconst cart = JSON.parse(localStorage.getItem('cart') || '[]');\n```\n\n"
     "works until someone has garbage in there. Wrapping it in try/catch now. Anyone have a nicer pattern?"),
    ("Why does my button reload the page?", ["html", "javascript", "beginners"],
     "I have\n\n```html\n<form id=\"profile\">\n  <input name=\"nickname\">\n  <button onclick=\"save()\">Save</button>\n</form>\n```\n\n"
     "and the page reloads every time I click Save, so my `save()` function's `fetch` gets cancelled. What am I doing wrong?"),
    ("Rendering user content: innerHTML or textContent?", ["javascript", "dom"],
     "Quick tip from today's bug bash: if you only need text, use\n\n```js\ndocument.querySelector('#comment').textContent = comment.body;\n```\n\n"
     "instead of `innerHTML`. It's faster and you don't accidentally render someone's `<b>` tags."),
    ("Debounce a search box without lodash", ["javascript"],
     "```js\nfunction debounce(fn, ms = 300) {\n  let t;\n  return (...args) => {\n    clearTimeout(t);\n    t = setTimeout(() => fn(...args), ms);\n  };\n}\n\n"
     "input.addEventListener('input', debounce(e => search(e.target.value)));\n```"),
    ("Promise.all vs Promise.allSettled", ["javascript", "async"],
     "If one request fails, `Promise.all` rejects immediately and you lose the others' results.\n\n```js\nconst results = await Promise.allSettled(urls.map(u => fetch(u)));\n"
     "const ok = results.filter(r => r.status === 'fulfilled').map(r => r.value);\n```"),
    ("Express middleware order matters", ["node", "express"],
     "Spent an hour on this: my `req.body` was undefined because I registered the router before `express.json()`.\n\n```js\nconst app = express();\napp.use(express.json({ limit: '1mb' }));\napp.use('/api', apiRouter);\napp.listen(process.env.PORT || 3000);\n```"),
    ("How to free disk space on an Ubuntu server?", ["linux", "devops"],
     "Root partition is at 97%. What I've tried so far:\n\n```sh\nsudo du -sh /var/log/* | sort -h | tail\nsudo journalctl --vacuum-time=7d\ndocker system prune -af\n```\n\n"
     "Still 90%. What else usually eats space?"),
    ("Cleaning old log files with find", ["bash", "linux"],
     "This deletes `.log` files older than a week in the current directory tree:\n\n```bash\nfind . -name '*.log' -mtime +7 -delete\n```\n\n"
     "Run it without `-delete` first to see what it would remove!"),
    ("Installing Node with nvm on a fresh machine", ["node", "nvm", "setup"],
     "Steps that worked for me on Debian 12:\n\n```bash\ncurl -o- https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh | bash\nsource ~/.bashrc\nnvm install --lts\nnode -v && npm -v\n```"),
    ("Backing up a project folder before a risky refactor", ["bash"],
     "```bash\ntar -czf ~/backups/shop-$(date +%F).tar.gz --exclude=node_modules ~/projects/shop\n```\n\n"
     "Then `tar -tzf` the archive to check it's not empty. Learned that one the hard way."),
    ("Which process is using port 3000?", ["linux", "node"],
     "`Error: listen EADDRINUSE: address already in use :::3000`\n\nOn Linux/macOS:\n\n```bash\nlsof -i :3000\n# or\nss -ltnp | grep 3000\nkill -9 <PID>\n```\n\n"
     "On Windows: `netstat -ano | findstr :3000` then `taskkill /PID <PID> /F`."),
    ("Setting PATH for a user-installed CLI", ["bash", "shell"],
     "Add this to `~/.bashrc` (or `~/.zshrc`):\n\n```bash\nexport PATH=\"$HOME/.local/bin:$PATH\"\n```\n\nthen `source ~/.bashrc` or open a new terminal. `which mytool` should now print `/home/you/.local/bin/mytool`."),
    ("SSH key permissions error", ["ssh", "linux"],
     "Getting `WARNING: UNPROTECTED PRIVATE KEY FILE!`. Fix:\n\n```bash\nchmod 700 ~/.ssh\nchmod 600 ~/.ssh/id_ed25519\nchmod 644 ~/.ssh/id_ed25519.pub\nssh -i ~/.ssh/id_ed25519 deploy@203.0.113.10\n```"),
    ("Cron job runs manually but not from crontab", ["cron", "linux"],
     "My crontab line:\n\n```\n*/5 * * * * /usr/local/bin/backup.sh >> /var/log/backup.log 2>&1\n```\n\n"
     "Works when I run the script by hand. From cron it fails with `pg_dump: command not found`. I guess cron has a different PATH?"),
    ("Interactive rebase to squash commits", ["git"],
     "```bash\ngit rebase -i HEAD~3\n# change 'pick' to 'squash' (or 's') on the 2nd and 3rd lines\ngit push --force-with-lease\n```\n\n"
     "Only do this on your own branch, never on main!"),
    ("git: undo the last commit but keep the changes", ["git", "beginners"],
     "`git reset --soft HEAD~1` keeps them staged, `git reset HEAD~1` keeps them unstaged. `git reset --hard` throws them away — careful."),
    ("Simple newsletter form in HTML", ["html", "css"],
     "Here's the markup I ended up with:\n\n```html\n<form action=\"/subscribe\" method=\"post\" class=\"newsletter\">\n  <label for=\"email\">Email</label>\n"
     "  <input type=\"email\" id=\"email\" name=\"email\" placeholder=\"you@example.com\" required>\n  <button type=\"submit\">Subscribe</button>\n</form>\n```\n\n"
     "and the CSS is just flexbox with `gap: .5rem`."),
    ("Loading Chart.js from a CDN", ["javascript", "charts"],
     "Put this before your own script:\n\n```html\n<script src=\"https://cdn.jsdelivr.net/npm/chart.js\"></script>\n<canvas id=\"sales\" width=\"400\" height=\"200\"></canvas>\n```\n\n"
     "then `new Chart(document.getElementById('sales'), { type: 'bar', data })`."),
    ("Responsive images with srcset", ["html", "performance"],
     "```html\n<img src=\"/img/hero-800.jpg\"\n     srcset=\"/img/hero-400.jpg 400w, /img/hero-800.jpg 800w, /img/hero-1600.jpg 1600w\"\n     sizes=\"(max-width: 600px) 100vw, 50vw\"\n     alt=\"A cup of coffee on a wooden table\" loading=\"lazy\">\n```"),
    ("Embedding a YouTube video responsively", ["html", "css"],
     "```html\n<div class=\"video\">\n  <iframe src=\"https://www.youtube-nocookie.com/embed/abc123XYZ_0\" title=\"Product demo\" allowfullscreen></iframe>\n</div>\n```\n\n"
     "```css\n.video { aspect-ratio: 16 / 9; }\n.video iframe { width: 100%; height: 100%; border: 0; }\n```"),
    ("CSS grid card layout that wraps", ["css"],
     "```css\n.cards {\n  display: grid;\n  grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));\n  gap: 1rem;\n}\n```\n\nNo media queries needed 🎉"),
    ("Regex to validate an email address?", ["regex", "javascript"],
     "I'm using `/^[^\\s@]+@[^\\s@]+\\.[^\\s@]+$/`. I know it's not RFC 5322 compliant. Good enough for a signup form, or should I just send a confirmation email and not bother?"),
    ("Parsing a CSV export in Python", ["python", "csv"],
     "```python\nimport csv\n\nwith open('orders.csv', newline='', encoding='utf-8') as f:\n    for row in csv.DictReader(f):\n        print(row['order_id'], row['total'])\n```\n\n"
     "Gives `KeyError: 'order_id'` — the first column header has a BOM. Use `encoding='utf-8-sig'`."),
    ("Running a shell command from Python", ["python"],
     "Prefer `subprocess.run` with a list, not a string with `shell=True`:\n\n```python\nimport subprocess\nresult = subprocess.run(['git', 'status', '--short'], capture_output=True, text=True, check=True)\nprint(result.stdout)\n```"),
    ("Dockerfile for a small Node API", ["docker", "node"],
     "```dockerfile\nFROM node:20-alpine\nWORKDIR /app\nCOPY package*.json ./\nRUN npm ci --omit=dev\nCOPY . .\nUSER node\nEXPOSE 3000\nCMD [\"node\", \"server.js\"]\n```\n\nImage is 180 MB. Can I get it smaller?"),
    ("docker-compose: app can't reach postgres", ["docker", "postgresql"],
     "```yaml\nservices:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: example\n  api:\n    build: .\n    environment:\n      DATABASE_URL: postgres://postgres:example@localhost:5432/postgres\n    depends_on: [db]\n```\n\n"
     "Getting ECONNREFUSED 127.0.0.1:5432. (Answer to self: use `db` as the host, not `localhost`.)"),
    ("nginx reverse proxy to a Node app", ["nginx", "node"],
     "```nginx\nserver {\n    listen 80;\n    server_name shop.example.com;\n\n    location /api/ {\n        proxy_pass http://127.0.0.1:3000/;\n        proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }\n}\n```\n\n"
     "With the trailing slash on proxy_pass, `/api/users` arrives as `/users`. Without it, as `/api/users`."),
    ("WordPress: printing a custom field in a theme", ["php", "wordpress"],
     "In `single.php` I have\n\n```php\n<?php echo esc_html( get_post_meta( get_the_ID(), 'subtitle', true ) ); ?>\n```\n\nbut nothing shows. The field is definitely saved. Am I inside the loop?"),
    ("Java: reading a file line by line", ["java"],
     "```java\ntry (BufferedReader br = Files.newBufferedReader(Path.of(\"input.txt\"))) {\n    String line;\n    while ((line = br.readLine()) != null) {\n        System.out.println(line);\n    }\n}\n```\n\nIs `Files.lines()` better for big files?"),
    ("PowerShell: find large files", ["windows", "powershell"],
     "```powershell\nGet-ChildItem C:\\Users\\me\\Downloads -Recurse -File |\n  Where-Object { $_.Length -gt 500MB } |\n  Sort-Object Length -Descending |\n  Select-Object FullName, @{n='MB';e={[math]::Round($_.Length/1MB)}}\n```"),
    ("TypeError: Cannot read properties of undefined (reading 'map')", ["react", "javascript"],
     "```\nTypeError: Cannot read properties of undefined (reading 'map')\n    at UserList (webpack-internal:///./src/components/UserList.jsx:12:23)\n    at renderWithHooks (react-dom.development.js:16305:18)\n```\n\n"
     "`users` is undefined on the first render because the fetch hasn't finished. Default it: `const [users, setUsers] = useState([]);`"),
    ("Spreadsheet formula to flag big orders", ["excel", "sheets"],
     "In column D: `=IF(C2>100, \"High\", \"Normal\")` and for looking up the customer name: `=VLOOKUP(B2, Customers!A:C, 3, FALSE)`. Works in both Excel and Google Sheets."),
    ("Makefile with .PHONY targets", ["make"],
     "```make\n.PHONY: test lint build\n\ntest:\n\tnpm test\n\nlint:\n\tnpx eslint src/\n\nbuild: lint test\n\tnpm run build\n```"),
    ("Maths notation in posts?", ["meta", "markdown"],
     "Does the forum support LaTeX? I'd like to write $$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$ without a screenshot."),
    ("What does `rm -rf node_modules && npm install` actually fix?", ["node", "npm"],
     "Everyone suggests it, it usually works, but nobody explains why. Is it the lockfile, the cache, or native modules built for a different Node version?"),
    ("Rust: borrowed value does not live long enough", ["rust"],
     "```rust\nfn longest<'a>(x: &'a str, y: &'a str) -> &'a str {\n    if x.len() > y.len() { x } else { y }\n}\n```\n\nI get why the lifetime is needed, but not why `String::from(\"abc\").as_str()` fails when passed in."),
    ("Go: closing over the loop variable", ["go"],
     "```go\nfor _, u := range users {\n    go func() {\n        fmt.Println(u.Name)\n    }()\n}\n```\n\nPrints the last user 5 times on Go 1.21, correct names on 1.22. Why?"),
    ("Environment variables in Vite", ["vite", "javascript"],
     "Only variables prefixed with `VITE_` are exposed: `import.meta.env.VITE_API_URL`. Don't put secrets in them — they end up in the bundle."),
    ("Sorting dates stored as strings", ["javascript"],
     "ISO 8601 strings like `2024-03-05T14:30:00Z` sort correctly as strings. `05/03/2024` does not! `dates.sort((a, b) => new Date(a) - new Date(b))` if you must."),
    ("Show your homelab 🖥️", ["homelab", "off-topic"],
     "Mine: 3x mini PCs running Proxmox, a NAS with 4x 8TB in RAID-Z1, Pi-hole on a Raspberry Pi 4, and way too many Ethernet cables. Post yours!"),
]

for i, (title, tags, body) in enumerate(FORUM_THREADS, 1):
    add("forum-thread-%02d" % i, "POST", "/api/forum/threads", json_body={
        "title": title, "body": body, "tags": tags, "category_id": 3 + (i % 6), "subscribe": True})

FORUM_REPLIES = [
    "Add `RETURNING id` at the end: `INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id` and read `rows[0].id`.",
    "Thanks, this worked! 🙏",
    "+1, same issue on Node 18.19 and 20.11.",
    "Did you try `npm cache clean --force`? Fixed a similar thing for me.",
    "Check your `.env` file — `DATABASE_URL` must be set before the pool is created, not after.",
    "`rm -rf node_modules package-lock.json && npm install` fixed it for me. Probably a stale native build.",
    "You need a composite index: `CREATE INDEX CONCURRENTLY idx_payments_merchant_created ON payments (merchant_id, created_at);`",
    "Because `WHERE o.id IS NOT NULL` is implied by the inner join. Put the filter in the `ON` clause if you want to keep the left rows.",
    "Yes, wrap it: `BEGIN; DELETE ...; SELECT count(*) FROM subscribers; COMMIT;` and you can `ROLLBACK` if the count looks wrong.",
    "The button defaults to `type=\"submit\"` inside a form. Use `<button type=\"button\">` or call `event.preventDefault()` in a submit handler.",
    "On Windows the equivalent is `set PATH=%USERPROFILE%\\.local\\bin;%PATH%` (cmd) or `$env:Path += \";$HOME\\.local\\bin\"` in PowerShell.",
    "Cron's PATH is just `/usr/bin:/bin`. Put `PATH=/usr/local/bin:/usr/bin:/bin` at the top of the crontab or use the full path `/usr/lib/postgresql/16/bin/pg_dump`.",
    "Also check `/var/lib/docker` — old images & build cache can be tens of GB. `docker system df` shows it.",
    "I'd go further: `--exclude=.git` too, unless you want the history in the backup.",
    "This is the way. Also `textContent` doesn't parse, so it's safe with user input like `<3` or `a < b`.",
    "Multi-stage build + `node:20-alpine` + `npm ci --omit=dev` got ours from 1.1 GB to 160 MB.",
    "Lol same, 3 hours on a missing `express.json()`. The error message could be so much better.",
    "Loop variables are per-iteration since Go 1.22, that's the change: https://go.dev/blog/loopvar-preview",
    "Nice write-up! Small typo: in the second example you wrote `ORDR BY`.",
    "Can confirm `encoding='utf-8-sig'` fixes it. Excel adds the BOM when you \"Save as CSV UTF-8\".",
    "You're not inside The Loop in `single.php`? Try `the_post();` first or pass the ID explicitly.",
    "Ha, my homelab is one old laptop with a broken screen running everything 😂",
    "Marking this as solved. For future readers: the answer is in the 3rd reply.",
    "Not quite — `Files.lines()` is lazy too, but you must close the stream (use try-with-resources).",
    "Moderator note: moved to #databases, please keep the thread on topic.",
    "Ty! 👍",
    "Could you share the full error and your `package.json`? Hard to tell from the snippet.",
    "In MySQL 8 you could also use a CTE with `ROW_NUMBER() OVER (PARTITION BY email ORDER BY id DESC)` and delete where rn > 1.",
]
for i, text in enumerate(FORUM_REPLIES, 1):
    add("forum-reply-%02d" % i, "POST", "/api/forum/threads/%d/replies" % (4100 + i * 3),
        json_body={"body": text, "quote_post_id": (9000 + i) if i % 5 == 0 else None})

add("forum-edit-1", "PATCH", "/api/forum/posts/90211", json_body={
    "body": "**Edit:** solved — I was missing `await` before `client.query(...)`. Leaving this here in case it helps someone.",
    "edit_reason": "solved"})
add("forum-edit-2", "PATCH", "/api/forum/posts/90388", json_body={
    "title": "[SOLVED] docker-compose: app can't reach postgres"})
add("forum-react", "PUT", "/api/forum/posts/90388/reactions/%F0%9F%91%8D", json_body={})
add("forum-react-2", "POST", "/api/forum/posts/90391/reactions", json_body={"emoji": "🎉"})
add("forum-report", "POST", "/api/forum/posts/90402/flags", json_body={
    "reason": "spam", "details": "Same link to a crypto site posted in 5 threads in the last hour."})
add("forum-draft", "PUT", "/api/forum/drafts/thread-new", json_body={
    "title": "Best way to store money amounts?",
    "body": "I've read that `float` is bad for money (0.1 + 0.2 !== 0.3). So integers in cents, or `NUMERIC(12,2)` in Postgres?"})
add("forum-preview", "POST", "/api/forum/preview", json_body={
    "markdown": "# Heading\n\nSome *emphasis*, some **bold**, a [link](https://example.org/docs?page=2#install) and `inline code`.\n\n> quoted text\n\n1. one\n2. two"})
add("forum-poll", "POST", "/api/forum/threads/4177/poll", json_body={
    "question": "Tabs or spaces?", "options": ["Tabs", "Spaces (2)", "Spaces (4)", "Whatever the formatter says"],
    "closes_at": "2024-07-01T12:00:00Z"})

# ----------------------------------------------------------------- search

SEARCHES = [
    "o'reilly javascript book", "usb-c to hdmi adapter", "women's waterproof jacket size 12",
    "how to select all rows in sql", "\"cast iron\" skillet", "coffee & tea", "50% off",
    "c++ tutorial for beginners", "node.js vs deno", "1/2\" copper pipe fitting", "москва отели",
    "北京 酒店", "café près de moi", "what is 2+2", "where is my order", "return policy",
    "drop shipping suppliers", "union jack flag", "order by date", "script writing course",
    "alert sound for notifications", "iframe embed youtube", "java script for beginners",
    "executive office chair", "admin dashboard template", "edit hosts file windows 11",
    "Ben & Jerry's cookie dough", "AT&T phone plans", "M&M's party pack", "kids' shoes size 13",
    "python select from list", "update iphone", "delete my account", "insert coin sound effect",
    "count duplicates excel", "sleep timer app", "table of contents word", "benchmark ssd vs hdd",
    "unicode emoji list 😀", "مطاعم قريبة", "हिंदी किताबें", "Ελληνικό γιαούρτι", "日本語 教科書",
    "bash scripting for beginners", "replace tap washer", "chmod 755 meaning", "cat toys",
    "best linux distro 2024", "exec summary template", "shell beach holidays",
]
for i, term in enumerate(SEARCHES, 1):
    params = [("q", term)]
    if i % 3 == 0:
        params.append(("page", str(1 + i % 4)))
    if i % 4 == 0:
        params.append(("sort", "relevance"))
    add("search-%02d" % i, "GET", "/api/search", params)

add("search-autocomplete-1", "GET", "/api/search/suggest", qs({"q": "cof"}))
add("search-autocomplete-2", "GET", "/api/search/suggest", qs({"q": "chef's kn"}))
add("search-autocomplete-3", "GET", "/api/search/suggest", qs({"q": "27\" mon"}))
add("search-post", "POST", "/api/search", json_body={
    "query": "noise cancelling headphones under $100",
    "filters": {"price": {"lte": 100}, "brand": ["Sony", "Anker", "JBL"], "rating": {"gte": 4}},
    "sort": [{"field": "price", "order": "asc"}], "page": {"size": 24, "number": 1}})
add("search-saved", "POST", "/api/users/me/saved-searches", json_body={
    "name": "Cheap 4K monitors", "query": "4k monitor 27\"", "alert": "daily"})
add("search-es-dsl", "POST", "/api/logs/search", json_body={
    "query": {"bool": {"must": [{"match": {"message": "timeout"}}],
                       "filter": [{"range": {"@timestamp": {"gte": "now-1h"}}}, {"term": {"service": "checkout"}}]}},
    "size": 50, "sort": [{"@timestamp": "desc"}]})

# -------------------------------------------------- pagination and filters

LISTINGS = [
    ("/api/orders", "page=2&per_page=50&sort=-created_at"),
    ("/api/orders", "status=pending&status=processing&sort=created_at"),
    ("/api/tickets", "filter[status]=open&filter[priority]=high&include=assignee,comments"),
    ("/api/tickets", "filter%5Bstatus%5D=open&filter%5Bassignee%5D=me&page%5Bsize%5D=25&page%5Bnumber%5D=3"),
    ("/api/articles", "fields[articles]=title,body,author&fields[people]=name&include=author"),
    ("/api/products", "limit=20&offset=40&order=price.asc"),
    ("/api/users", "select=id,name,email&name=ilike.*smith*&order=created_at.desc"),
    ("/api/events", "from=2024-03-01T00:00:00Z&to=2024-03-31T23:59:59Z&tz=Europe%2FDublin"),
    ("/api/logs", "level=error&since=2024-05-01T10:00:00.000Z&limit=100"),
    ("/api/items", "cursor=eyJpZCI6MTIzNCwidHMiOjE3MTUwMDAwMDB9&limit=25"),
    ("/api/products", "q=shirt&facets=brand,color,size&color[]=red&color[]=blue&size[]=M"),
    ("/api/issues", "state=open&labels=bug,good%20first%20issue&sort=updated&direction=desc&per_page=30"),
    ("/api/transactions", "amount[gte]=100&amount[lte]=500&currency=EUR&type=debit"),
    ("/api/contacts", "where=%7B%22city%22%3A%22Berlin%22%2C%22tags%22%3A%7B%22%24in%22%3A%5B%22vip%22%5D%7D%7D&limit=50"),
    ("/api/posts", "filters[title][$contains]=hello&populate=*&pagination[page]=1&pagination[pageSize]=10"),
    ("/api/customers", "filter=%7B%22where%22%3A%7B%22status%22%3A%22active%22%7D%2C%22limit%22%3A10%2C%22order%22%3A%22name%20ASC%22%7D"),
    ("/api/reports/export", "format=csv&columns=date,amount,description,category&from=2024-01-01&to=2024-03-31"),
    ("/api/geo/nearby", "lat=53.3498&lng=-6.2603&radius=5km&type=cafe"),
    ("/api/stores", "near=Dublin%2C%20Ireland&open_now=true"),
    ("/api/products", "category=kitchen&min_price=10&max_price=50&in_stock=1&sort=price&order=asc"),
    ("/api/products", "sort=-rating,price&page=1"),
    ("/api/users", "role=admin&role=editor&active=true&fields=id,name,last_login_at"),
    ("/api/messages", "conversation_id=c_8812&before=2024-05-20T08%3A15%3A00%2B02%3A00&limit=40"),
    ("/api/invoices", "status=overdue&due_before=2024-06-01&expand[]=customer&expand[]=lines"),
    ("/api/analytics/timeseries", "metric=revenue&interval=1d&start=2024-04-01&end=2024-04-30&group_by=channel"),
    ("/api/calendar", "view=week&date=2024-06-10&calendars=work,personal,holidays-ie"),
    ("/api/files", "path=%2FProjects%2FQ3%20Planning&recursive=false&sort=name"),
    ("/api/comments", "post_id=812&sort=oldest&depth=3"),
    ("/api/notifications", "unread=true&types=mention,reply&since_id=99812"),
    ("/api/search/products", "q=caf%C3%A9+cr%C3%A8me&lang=fr"),
    ("/api/jobs", "q=node.js&location=remote&salary_min=60000&employment_type=full-time"),
    ("/api/listings", "bedrooms=2&max_rent=1800&pets=cats&available_from=2024-07-01&sort=-published_at"),
    ("/api/recipes", "ingredients=chicken,rice,garlic&exclude=nuts&max_time=45"),
    ("/api/flights", "from=DUB&to=LIS&depart=2024-08-12&return=2024-08-19&adults=2&children=1&cabin=economy"),
    ("/api/weather", "q=S%C3%A3o%20Paulo&units=metric&lang=pt_br"),
    ("/api/translations", "locale=zh-Hans&namespace=checkout"),
    ("/api/audit-log", "actor=user_441&action=update&resource=product&since=7d"),
    ("/api/products", "ids=prd_83kd92,prd_1f0a77,prd_a93kd1"),
    ("/api/health", ""),
    ("/api/v2/me", ""),
]
for i, (path, query) in enumerate(LISTINGS, 1):
    add("list-%02d" % i, "GET", path, query)

# ------------------------------------------------------------ URLs as values

add("url-bookmark-1", "POST", "/api/bookmarks", json_body={
    "url": "https://developer.mozilla.org/en-US/docs/Web/JavaScript/Reference/Global_Objects/Array/map#examples",
    "title": "Array.prototype.map() - JavaScript | MDN", "tags": ["js", "reference"]})
add("url-bookmark-2", "POST", "/api/bookmarks", json_body={
    "url": "https://www.postgresql.org/docs/16/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY",
    "title": "PostgreSQL: CREATE INDEX", "notes": "Building indexes without locking out writes"})
add("url-bookmark-3", "POST", "/api/bookmarks", json_body={
    "url": "https://news.example.com/article/2024/05/15/local-bakery-wins-award?utm_source=newsletter&utm_medium=email&utm_campaign=may",
    "title": "Local bakery wins national award"})
add("url-webhook-create", "POST", "/api/webhooks", json_body={
    "target_url": "https://hooks.example.com/services/T0001/B0002/abcDEF123ghi",
    "events": ["order.created", "order.refunded"], "secret": hexstr(24), "active": True})
add("url-webhook-2", "POST", "/api/webhooks", json_body={
    "target_url": "https://api.example.net/integrations/shop?token=%s&env=prod" % hexstr(12),
    "events": ["customer.updated"], "content_type": "json"})
add("url-link-preview", "POST", "/api/link-preview", json_body={
    "url": "https://www.youtube.com/watch?v=abc123XYZ_0&t=42s"})
add("url-link-preview-2", "POST", "/api/link-preview", json_body={
    "url": "https://github.com/acme/widgets/pull/42/files#diff-3f1c"})
add("url-oauth-app", "POST", "/api/developer/apps", json_body={
    "name": "My CLI tool", "redirect_uris": ["http://localhost:3000/auth/callback", "http://127.0.0.1:8765/callback",
                                             "https://tools.example.dev/oauth/callback"],
    "homepage": "https://tools.example.dev", "scopes": ["read:orders", "write:products"]})
add("url-redirect", "GET", "/api/auth/login", qs({"next": "/dashboard?tab=billing"}))
add("url-redirect-2", "GET", "/api/auth/logout", qs({"return_to": "https://shop.example.com/"}))
add("url-share", "GET", "/api/share", qs({"url": "https://example.com/blog/post-1?utm_source=newsletter", "via": "twitter"}))
add("url-image-import", "POST", "/api/admin/products/prd_83kd92/images", json_body={
    "source_url": "https://images.example-cdn.com/products/chair-side.jpg?w=1600&h=1200&fit=crop&auto=format,compress",
    "alt": "Office chair, side view", "position": 2})
add("url-presigned", "POST", "/api/uploads/complete", json_body={
    "upload_url": "https://uploads-bucket.s3.eu-west-1.amazonaws.com/u/%s/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                  "&X-Amz-Credential=AKIAEXAMPLE%%2F20240515%%2Feu-west-1%%2Fs3%%2Faws4_request&X-Amz-Date=20240515T101500Z"
                  "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=%s" % (uid(), hexstr(32)),
    "size": 284113, "content_type": "image/jpeg"})
add("url-map-link", "POST", "/api/events", json_body={
    "title": "Team lunch 🍕", "location": "Pizza Place, 21 Camden St",
    "map_url": "https://maps.google.com/?q=53.3345,-6.2650", "starts_at": "2024-06-14T12:30:00+01:00"})
add("url-repo", "POST", "/api/projects", json_body={
    "name": "widgets", "repository": "git@github.com:acme/widgets.git",
    "docs_url": "https://acme.github.io/widgets/", "default_branch": "main"})
add("url-mailto", "PATCH", "/api/settings/footer", json_body={
    "links": [{"label": "Contact", "href": "mailto:support@example.com?subject=Order%20help"},
              {"label": "Call us", "href": "tel:+35315550100"},
              {"label": "Privacy", "href": "/legal/privacy"}]})
add("url-feed", "POST", "/api/feeds", json_body={"url": "https://blog.example.org/feed.xml", "folder": "Tech"})
add("url-calendar-sub", "POST", "/api/calendars/subscribe", json_body={
    "ics_url": "https://calendar.example.com/ical/holidays/ie.ics?lang=en"})
add("url-ftp-ticket", "POST", "/api/support/tickets", json_body={
    "subject": "Can't find the firmware download",
    "body": "The manual says to get it from ftp://ftp.example.org/pub/firmware/ but my browser won't open ftp links anymore. Is there an https mirror?"})
add("url-utm", "POST", "/api/analytics/events", json_body={
    "event": "page_view", "properties": {"path": "/pricing?plan=pro&billing=annual", "referrer": "https://www.google.com/",
                                          "utm": {"source": "google", "medium": "cpc", "campaign": "brand-ie"}},
    "timestamp": "2024-05-15T09:12:44.120Z", "anonymous_id": uid()})
add("url-qr", "POST", "/api/qr-codes", json_body={
    "target": "https://shop.example.com/p/prd_83kd92?ref=qr&store=dublin-2", "size": 512, "format": "png"})

# ------------------------------------------- base64, data: URIs, tokens

add("enc-b64-avatar-png", "PUT", "/api/users/me/avatar", json_body={
    "image": data_uri_png(16, 16, lambda x, y: (x * 16, y * 16, 160))})
add("enc-b64-avatar-png-2", "PUT", "/api/users/me/avatar", json_body={
    "image": data_uri_png(24, 24, lambda x, y: (255, 200, 0) if (x - 12) ** 2 + (y - 12) ** 2 < 100 else (255, 255, 255))})
add("enc-b64-gif", "POST", "/api/emails/templates/welcome/assets", json_body={
    "name": "spacer.gif", "data": "data:image/gif;base64," + base64.b64encode(GIF_1X1).decode()})
add("enc-b64-svg", "POST", "/api/admin/badges", json_body={
    "name": "Verified seller", "icon": "data:image/svg+xml;base64," + base64.b64encode(SVG_ICON.encode()).decode()})
add("enc-b64-svg-utf8", "PATCH", "/api/admin/theme", json_body={
    "checkbox_icon": "data:image/svg+xml;utf8," + SVG_ICON.replace("<", "%3C").replace(">", "%3E").replace("#", "%23"),
    "primary_color": "#2f855a", "font_family": "\"Inter\", system-ui, sans-serif"})
add("enc-b64-pdf-attachment", "POST", "/api/support/tickets/t_7781/attachments", json_body={
    "filename": "invoice-2024-03.pdf", "content_type": "application/pdf",
    "content_base64": base64.b64encode(TINY_PDF).decode()})
add("enc-b64-csv-import", "POST", "/api/imports", json_body={
    "filename": "contacts.csv", "encoding": "base64",
    "data": base64.b64encode("name,email\nSiobhán O'Brien,siobhan@example.ie\nMarco D'Angelo,marco@example.it\n".encode()).decode()})
add("enc-b64-text-note", "POST", "/api/notes", json_body={
    "title": "encoded", "content": base64.b64encode("Meeting moved to Thursday 3pm — room 2.14".encode()).decode(),
    "encoding": "base64"})
add("enc-b64-signature-pad", "POST", "/api/deliveries/dl_5521/proof", json_body={
    "signed_by": "J. O'Sullivan", "signature": data_uri_png(32, 12, lambda x, y: (0, 0, 0) if y == 6 + (x % 5) - 2 else (255, 255, 255)),
    "signed_at": "2024-05-16T14:02:11+01:00"})
add("enc-b64-webauthn", "POST", "/api/auth/webauthn/register/finish", json_body={
    "id": b64url(RNG.randbytes(32)), "rawId": b64url(RNG.randbytes(32)), "type": "public-key",
    "response": {"clientDataJSON": b64url(js({"type": "webauthn.create", "challenge": b64url(RNG.randbytes(32)),
                                                "origin": "https://shop.example.com", "crossOrigin": False}).encode()),
                 "attestationObject": b64url(RNG.randbytes(180))}})
add("enc-b64-pgp-key", "PATCH", "/api/users/me/keys", json_body={
    "pgp_public_key": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + "\n".join(
        base64.b64encode(RNG.randbytes(48)).decode() for _ in range(6)) + "\n=Ab3d\n-----END PGP PUBLIC KEY BLOCK-----\n"})
add("enc-b64-cert-ticket", "POST", "/api/support/tickets", json_body={
    "subject": "Custom domain certificate rejected",
    "body": "Uploading our cert gives \"invalid chain\". Here's the leaf (public, no key):\n\n-----BEGIN CERTIFICATE-----\n"
            + "\n".join(base64.b64encode(RNG.randbytes(48)).decode() for _ in range(8))
            + "\n-----END CERTIFICATE-----\n\nDo I need to include the intermediate?"})
add("enc-jwt-share-link", "POST", "/api/documents/doc_311/share", json_body={
    "share_token": jwt_like({"doc": "doc_311", "perm": "view", "exp": 1718000000}), "expires_in_days": 7})
add("enc-jwt-invite", "POST", "/api/teams/join", json_body={
    "invite": jwt_like({"team": "tm_42", "email": "li.na@example.cn", "iat": 1715700000})})
add("enc-jwt-forum-debug", "POST", "/api/forum/threads", json_body={
    "title": "Why does jwt.verify say 'invalid signature'?",
    "body": "My test token (dummy secret, expired, don't worry):\n\n`" + jwt_like({"sub": "1234", "name": "Test User", "iat": 1516239022}) +
            "`\n\nI sign with `jwt.sign(payload, process.env.JWT_SECRET)` and verify with the same env var... but in a different service. Could the env differ?",
    "tags": ["node", "jwt"], "category_id": 4})
add("enc-jwt-unsubscribe", "POST", "/api/newsletter/unsubscribe", json_body={
    "token": jwt_like({"list": "weekly", "uid": "u_8812"}), "reason": "too_frequent"})
add("enc-jwt-payment-secret", "POST", "/api/checkout/confirm", json_body={
    "client_secret": "pi_%s_secret_%s" % (hexstr(12), hexstr(12)), "return_url": "https://shop.example.com/checkout/complete"})
add("enc-token-api-key-name", "POST", "/api/developer/keys", json_body={
    "name": "CI deploy key", "scopes": ["deploy"], "expires_at": "2025-01-01T00:00:00Z"})
add("enc-hash-integrity", "POST", "/api/releases", json_body={
    "version": "2.4.1", "artifacts": [
        {"name": "app-2.4.1-linux-x64.tar.gz", "sha256": hexstr(32), "size": 48213311},
        {"name": "app-2.4.1-win-x64.zip", "sha256": hexstr(32), "size": 51002977}],
    "notes": "Fixes crash on startup when ~/.config/app/settings.json is empty."})
add("enc-uuid-bulk", "POST", "/api/notifications/mark-read", json_body={"ids": [uid() for _ in range(8)]})
add("enc-b64-cursor-body", "POST", "/api/feed", json_body={
    "cursor": base64.b64encode(js({"last_id": 99120, "ts": "2024-05-15T09:00:00Z"}).encode()).decode(), "limit": 20})
add("enc-b64-image-url-ref", "POST", "/api/messages", json_body={
    "conversation_id": "c_8812", "text": "here's the screenshot",
    "attachments": [{"type": "image", "data_uri": data_uri_png(8, 8, lambda x, y: (200, 30 * (x % 8), 30 * (y % 8)))}]})

# ------------------------------------------------------- support tickets

TICKETS = [
    ("Export is empty", "Hi, I exported my orders to Excel and it saved to C:\\Users\\anna\\Downloads\\orders-export (1).xlsx but the file only has the header row. I selected \"All time\" in the date range. Thanks!"),
    ("Logs from the failed sync", "The desktop app stopped syncing yesterday. The log at ~/Library/Logs/ShopSync/sync.log says:\n\nError: ENOENT: no such file or directory, open '/Users/marco/ShopSync/cache/index.db'\n\nI didn't delete anything."),
    ("API returns 401 after rotating key", "I updated the key in /home/deploy/app/.env and restarted with `pm2 restart api` but every call still gets 401 Unauthorized. Is there a delay before new keys work?"),
    ("Webhook deliveries failing", "Your dashboard shows our endpoint returning 502. Our nginx error log (/var/log/nginx/error.log) has `upstream timed out (110: Connection timed out) while reading response header from upstream`. Can you retry the failed deliveries from 14:00–15:30 UTC?"),
    ("Can't connect the database integration", "Connection test fails: `ECONNREFUSED 127.0.0.1:5432`. The DB is on a separate host (10.0.4.12), not localhost — looks like the form ignored the host field?"),
    ("Wrong VAT on invoice", "Invoice INV-2024-0319 charged 23% VAT but we're a VAT-registered business in Germany (USt-IdNr. DE123456789). Reverse charge should apply. Please reissue."),
    ("Charged twice", "I was charged €49.99 twice on 12/05 for order #ord_20240511_0042. Card ending 4242. Bank reference: 7731-AB-0098."),
    ("Import fails on row 214", "CSV import stops with \"Unexpected quote in unquoted field at row 214\". Row 214 is:\n\n12\" pizza stone,PZS-12,24.99,\"Kitchen, Outdoor\"\n\nI think the inch mark is the problem?"),
    ("Feature request: dark mode for invoices", "Not urgent but our accountant prints everything from dark mode & the logo disappears 🙈"),
    ("App crashes on Android 14", "Crash on launch since the last update (v5.2.0, build 5200). Device: Pixel 7, Android 14. Stack trace excerpt:\n\njava.lang.NullPointerException: Attempt to invoke virtual method 'java.lang.String android.content.Context.getPackageName()' on a null object reference\n    at com.example.shop.MainActivity.onCreate(MainActivity.java:48)"),
    ("Config file location?", "Where does the CLI keep its config on Windows? The docs say ~/.shopcli/config.toml but there's no such folder under C:\\Users\\Łukasz\\. Is it %APPDATA%\\shopcli\\config.toml?"),
    ("Permissions after upgrade", "After upgrading to 3.0 the uploads folder is not writable: `EACCES: permission denied, mkdir '/var/www/shop/uploads/2024/05'`. I ran `chown -R www-data:www-data /var/www/shop/uploads` and it works now, but should the installer do this?"),
    ("Password reset email never arrives", "Tried 3 times for d.oconnor-smith@example.co.uk. Not in spam. Our mail server logs show nothing from your domain. Is the apostrophe-free address format OK? (My name has one, the email doesn't.)"),
    ("Timezone wrong on bookings", "Bookings made for 09:00 Europe/Lisbon show as 10:00 in the confirmation email. Looks like it's using CET. Booking ref: BK-88213."),
    ("Bulk edit request", "Could you change the category of all products with SKU starting with \"GRO-\" from 'grocery' to 'food & drink'? There are ~340 of them and the admin UI only does 50 at a time."),
    ("Bug: search ignores accents", "Searching \"creme\" doesn't find \"Crème hydratante\" but searching \"crème\" does. Most of our French customers type without accents on mobile."),
    ("Error when saving product", "Saving a product whose name contains an ampersand (\"Salt & Pepper Grinder Set\") gives 'Something went wrong'. Without the & it saves fine."),
    ("Shipping label printing", "Labels print at 50% size on our Zebra GK420d. Settings: 4\" x 6\", 203 dpi. Printing from Chrome on macOS 14.4. Attached a photo."),
    ("Account locked", "I entered my password wrong a few times (caps lock 🤦) and now it says the account is locked for 30 minutes. Is there any way to unlock it sooner? We have a sale starting at 12:00."),
    ("SFTP upload of product feed", "We push our feed with `sftp -i ~/.ssh/feed_key feeds@sftp.example.com` and `put products.xml /incoming/`. Since Monday it says 'Permission denied (publickey)'. Did you rotate host keys?"),
]
for i, (subject, body) in enumerate(TICKETS, 1):
    add("ticket-%02d" % i, "POST", "/api/support/tickets", json_body={
        "subject": subject, "body": body, "priority": ["low", "normal", "high"][i % 3],
        "metadata": {"app_version": "5.%d.%d" % (i % 4, i % 7), "os": ["Windows 11", "macOS 14.4", "Ubuntu 22.04", "Android 14", "iOS 17.5"][i % 5],
                     "browser": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"}})

add("ticket-reply-1", "POST", "/api/support/tickets/t_7781/messages", json_body={
    "body": "Thanks for the quick reply! I've attached the file from C:\\ProgramData\\ShopSync\\logs\\2024-05-15.log as requested."})
add("ticket-reply-2", "POST", "/api/support/tickets/t_7790/messages", json_body={
    "body": "Hi Ana, could you run `shopcli doctor --verbose > doctor.txt` and attach doctor.txt? It checks ~/.shopcli/, your network & the API key.",
    "internal": False})
add("ticket-internal-note", "POST", "/api/support/tickets/t_7790/notes", json_body={
    "body": "Customer is on the legacy plan; don't offer the 20% discount. Escalated to billing (see JIRA BILL-1182)."})
add("ticket-status", "PATCH", "/api/support/tickets/t_7781", json_body={"status": "resolved", "resolution": "duplicate charge refunded"})
add("ticket-csat", "POST", "/api/support/tickets/t_7781/rating", json_body={"score": 5, "comment": "Sorted in 10 min. Brilliant, thank you Aoife!"})

# ------------------------------------------------------- CSV and markdown

add("doc-csv-import-contacts", "POST", "/api/imports", json_body={
    "format": "csv", "has_header": True,
    "data": "name,email,phone,city\n\"O'Brien, Siobhán\",siobhan@example.ie,+353 87 123 4567,Dublin\n"
            "\"D'Angelo, Marco\",marco@example.it,+39 347 555 0192,Milano\n"
            "\"García-López, José María\",jm@example.es,,Madrid\n\"Смирнова, Ольга\",olga@example.ru,+7 912 345-67-89,Санкт-Петербург\n"})
add("doc-csv-import-products", "POST", "/api/admin/imports/products", json_body={
    "format": "csv", "delimiter": ";",
    "data": "sku;name;price;description\nKIT-0200;Pizza stone 12\";24,99;\"Cordierite, 12\"\" round – oven & BBQ safe\"\n"
            "KIT-0201;Salt & Pepper Grinder Set;19,50;Ceramic burrs, adjustable\nGRO-0310;Earl Grey 250 g;8,90;Bergamot & black tea\n"})
add("doc-csv-paste-prices", "POST", "/api/admin/price-lists/pl_eu/paste", json_body={
    "tsv": "SKU\tPrice EUR\tValid from\nFUR-0114\t229.00\t2024-06-01\nELE-0121\t309.99\t2024-06-01\nKIT-0128\t54.50\t2024-06-01"})
add("doc-csv-export-request", "POST", "/api/reports", json_body={
    "name": "Q1 sales by region", "format": "csv",
    "columns": ["region", "orders", "revenue", "avg_order_value"],
    "filters": {"from": "2024-01-01", "to": "2024-03-31", "status": ["paid", "shipped"]}})

DOC_PAGES = [
    ("Getting started", "# Getting started\n\nInstall the SDK:\n\n```bash\nnpm install @example/shop-sdk\n```\n\nThen:\n\n```js\nimport { Shop } from '@example/shop-sdk';\nconst shop = new Shop({ apiKey: process.env.SHOP_API_KEY });\nconst products = await shop.products.list({ limit: 10 });\n```\n\n> **Note:** never commit your API key. Use a `.env` file and add it to `.gitignore`."),
    ("Rate limits", "## Rate limits\n\n| Plan | Requests / min | Burst |\n|------|---------------:|------:|\n| Free | 60 | 10 |\n| Pro | 600 | 100 |\n| Enterprise | custom | custom |\n\nWhen you hit the limit you get `429 Too Many Requests` with a `Retry-After` header (seconds)."),
    ("Changelog 2.4", "## 2.4.0 — 2024-05-14\n\n### Added\n- `sort` now accepts multiple fields: `sort=-created_at,name`\n- Webhooks for `order.refunded`\n\n### Fixed\n- Products with `&` in the name couldn't be saved from the mobile app (#1182)\n- CSV export ignored the time zone (#1190)\n\n### Deprecated\n- `GET /v1/orders?page_size=` — use `per_page` instead."),
    ("Filtering", "# Filtering lists\n\nUse `filter[field]=value`, e.g. `GET /api/tickets?filter[status]=open&filter[priority]=high`.\n\nOperators: `filter[amount][gte]=100`, `filter[name][contains]=smith`. Dates are ISO 8601: `filter[created_at][lt]=2024-01-01T00:00:00Z`."),
    ("Troubleshooting", "### My requests fail with 400\n\n1. Check the `Content-Type: application/json` header is set.\n2. Make sure the body is valid JSON — trailing commas are not allowed.\n3. Look at the `error.details` array in the response, e.g.\n\n```json\n{\"error\": {\"code\": \"validation_failed\", \"details\": [{\"field\": \"email\", \"message\": \"is not a valid email\"}]}}\n```"),
    ("Recipe: Irish soda bread", "# Irish soda bread\n\n**Serves:** 8 · **Time:** 50 min\n\n- 450 g plain flour\n- 1 tsp bicarbonate of soda\n- 1 tsp salt\n- 400 ml buttermilk\n\nPreheat the oven to 200 °C (400 °F). Mix the dry ingredients, make a well & pour in most of the buttermilk. Don't knead! Cut a deep cross on top \"to let the fairies out\" and bake for 30–35 min."),
]
for i, (title, md) in enumerate(DOC_PAGES, 1):
    add("doc-md-page-%d" % i, "PUT", "/api/docs/pages/%d" % (20 + i), json_body={
        "title": title, "content": md, "format": "markdown", "published": True})

add("doc-md-release-notes", "POST", "/api/announcements", json_body={
    "title": "We're moving data centres 🚚",
    "body": "On **Saturday 8 June, 02:00–04:00 UTC** the dashboard will be read-only while we move to our new EU region.\n\n- The API stays up (reads only)\n- Webhooks will be queued & delivered afterwards\n- Nothing for you to do!\n\nQuestions? Reply here or email support@example.com.",
    "audience": "all"})
add("doc-md-wiki-table", "PATCH", "/api/wiki/oncall", json_body={
    "content": "| Week | Primary | Secondary |\n|---|---|---|\n| 2024-W23 | Siobhán | Dan |\n| 2024-W24 | Łukasz | Marco |\n\nEscalation: page #sre-oncall, then call the number in 1Password → \"On-call phone\"."})

# --------------------------------------------------------------- GraphQL

GQL = [
    ("GetProduct", "query GetProduct($id: ID!) {\n  product(id: $id) {\n    id\n    name\n    description\n    price { amount currency }\n    images(first: 4) { url alt }\n  }\n}", {"id": "prd_83kd92"}),
    ("SearchProducts", "query SearchProducts($q: String!, $after: String) {\n  search(query: $q, first: 24, after: $after) {\n    edges { node { id name price { amount } } }\n    pageInfo { hasNextPage endCursor }\n  }\n}", {"q": "chef's knife", "after": None}),
    ("AddComment", "mutation AddComment($input: AddCommentInput!) {\n  addComment(input: $input) {\n    comment { id body createdAt author { name } }\n  }\n}", {"input": {"postId": "p_812", "body": "Great write-up! The part about `UNION ALL` vs `UNION` finally clicked for me."}}),
    ("UpdateProfile", "mutation UpdateProfile($input: ProfileInput!) {\n  updateProfile(input: $input) { id displayName bio }\n}", {"input": {"displayName": "Renée L'Heureux", "bio": "Développeuse web à Montréal 🍁"}}),
    ("Viewer", "query Viewer {\n  viewer {\n    id\n    name\n    email\n    orders(last: 5) { nodes { id status total { amount currency } createdAt } }\n  }\n}", {}),
    ("CartFragments", "fragment Money on Money { amount currency }\n\nquery Cart($id: ID!) {\n  cart(id: $id) {\n    lines { quantity merchandise { ... on ProductVariant { id title price { ...Money } } } }\n    cost { subtotal { ...Money } total { ...Money } }\n  }\n}", {"id": "cart_4f2a"}),
    ("CreateOrder", "mutation CreateOrder($input: OrderInput!) {\n  createOrder(input: $input) { order { id number } userErrors { field message } }\n}", {"input": {"cartId": "cart_4f2a", "note": "Please gift wrap – it's for my sister's 30th!", "shippingAddress": ADDRESSES[1]}}),
    ("Issues", "query Issues($owner: String!, $name: String!) {\n  repository(owner: $owner, name: $name) {\n    issues(states: OPEN, first: 20, orderBy: {field: UPDATED_AT, direction: DESC}) {\n      nodes { number title labels(first: 5) { nodes { name } } }\n    }\n  }\n}", {"owner": "acme", "name": "widgets"}),
    ("Translations", "query T($locale: String!) { translations(locale: $locale, namespace: \"checkout\") { key value } }", {"locale": "ar"}),
    ("DeleteDraft", "mutation { deleteDraft(id: \"d_1182\") { success } }", {}),
]
for i, (op, query, variables) in enumerate(GQL, 1):
    add("graphql-%02d" % i, "POST", "/graphql", json_body={"operationName": op, "query": query, "variables": variables})
add("graphql-get", "GET", "/graphql", qs({"query": "{ shop { name currency } }"}))
add("graphql-persisted", "GET", "/graphql", qs({
    "operationName": "GetProduct", "variables": js({"id": "prd_1f0a77"}),
    "extensions": js({"persistedQuery": {"version": 1, "sha256Hash": hexstr(32)}})}))
add("graphql-introspection", "POST", "/graphql", json_body={
    "operationName": "IntrospectionQuery",
    "query": "query IntrospectionQuery { __schema { queryType { name } mutationType { name } types { kind name description fields(includeDeprecated: true) { name args { name type { kind name } } type { kind name ofType { kind name } } } } } }"})
add("graphql-batch", "POST", "/graphql", json_body=[
    {"query": "query { product(id: \"prd_a93kd1\") { name } }"},
    {"query": "query { product(id: \"prd_77ab3c\") { name } }"}])

# --------------------------------------------- calendar, chat, misc JSON

add("misc-cal-event-1", "POST", "/api/calendar/events", json_body={
    "title": "Sprint review & demo", "start": "2024-06-14T15:00:00+01:00", "end": "2024-06-14T16:00:00+01:00",
    "recurrence": "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=FR", "attendees": ["siobhan.obrien@example.ie", "marco.dangelo@example.it"],
    "description": "Agenda:\n1. Demo: new checkout (Marco)\n2. Metrics — conversion +3.2% 🎉\n3. Q&A"})
add("misc-cal-event-2", "POST", "/api/calendar/events", json_body={
    "title": "Dentist 🦷", "start": "2024-06-18T08:30:00-04:00", "duration_minutes": 45,
    "location": "Dr. O'Malley's, 2nd floor", "reminders": [{"minutes_before": 60, "method": "push"}]})
add("misc-cal-event-3", "PATCH", "/api/calendar/events/ev_3321", json_body={
    "start": "2024-06-20T10:00:00Z", "notify_attendees": True, "message": "Moving this to Thursday, sorry for the short notice!"})
add("misc-cal-availability", "POST", "/api/calendar/availability", json_body={
    "attendees": ["u_1", "u_2", "u_3"], "window": {"from": "2024-06-17T08:00:00Z", "to": "2024-06-21T18:00:00Z"}, "duration": "PT30M"})

CHAT = [
    "lol 😂", "see you @ 5?", "<3", "ok :) will do", "brb — coffee", "Can you send me the Q2 numbers? The \"final\" ones this time 😅",
    "Running 10 min late, train's stuck outside Connolly", "👍👍", "Who broke staging? 🙃", "It's deployed to prod. Fingers crossed 🤞",
    "Ping me when the PR's ready, I'll review after lunch", "Does anyone have the wifi password for the 3rd floor?",
    "Merci ! À demain 👋", "Спасибо, всё работает!", "好的，明天见", "شكراً جزيلاً!", "ευχαριστώ πολύ 🙏", "धन्यवाद!",
    "The meeting link is https://meet.example.com/abc-defg-hij?pwd=1234", "Is the 50% off code still valid or did it expire on the 31st?",
    "I'll be in the office Tue & Thu this week", "Order #4821 shipped, tracking: 1Z999AA10123456784",
    "Try `ctrl + shift + r` to hard refresh", "Happy Friday everyone!! 🎉🍕",
]
for i, text in enumerate(CHAT, 1):
    add("chat-%02d" % i, "POST", "/api/conversations/c_%d/messages" % (8800 + i % 4), json_body={
        "text": text, "client_msg_id": uid(), "sent_at": "2024-05-%02dT%02d:%02d:00Z" % (10 + i % 15, 8 + i % 10, (i * 7) % 60)})

add("misc-i18n-upload", "PUT", "/api/translations/en/checkout", json_body={
    "greeting": "Hello, {name}!", "items": "{count, plural, one {# item} other {# items}}",
    "free_shipping": "Free shipping on orders over {amount, number, ::currency/EUR}",
    "legal": "By placing your order you agree to our <a href=\"/terms\">Terms & Conditions</a>."})
add("misc-i18n-upload-ar", "PUT", "/api/translations/ar/checkout", json_body={
    "greeting": "مرحباً، {name}!", "items": "{count, plural, one {منتج واحد} other {# منتجات}}", "pay": "ادفع الآن"})
add("misc-i18n-upload-zh", "PUT", "/api/translations/zh-Hans/checkout", json_body={
    "greeting": "你好，{name}！", "items": "{count} 件商品", "pay": "立即付款", "legal": "下单即表示您同意我们的《服务条款》。"})
add("misc-settings-feature-flags", "PUT", "/api/admin/flags", json_body={
    "new_checkout": {"enabled": True, "rollout": 25, "segments": ["beta-testers", "country:IE"]},
    "dark_mode": {"enabled": True, "rollout": 100}})
add("misc-analytics-batch", "POST", "/api/analytics/batch", json_body={"events": [
    {"event": "product_viewed", "properties": {"product_id": "prd_83kd92", "price": 24.0}, "ts": 1715763164120},
    {"event": "add_to_cart", "properties": {"product_id": "prd_83kd92", "qty": 2}, "ts": 1715763179311},
    {"event": "search", "properties": {"q": "women's jacket", "results": 48}, "ts": 1715763201002}]})
add("misc-error-report", "POST", "/api/client-errors", json_body={
    "message": "Uncaught TypeError: Cannot read properties of null (reading 'addEventListener')",
    "source": "https://shop.example.com/assets/app.3f9c2a.js", "line": 1, "column": 48213,
    "stack": "TypeError: Cannot read properties of null (reading 'addEventListener')\n    at initMenu (https://shop.example.com/assets/app.3f9c2a.js:1:48213)\n    at https://shop.example.com/assets/app.3f9c2a.js:1:50110",
    "url": "https://shop.example.com/cart?step=2", "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"})
add("misc-csp-report-like", "POST", "/api/client-errors", json_body={
    "type": "resource_failed", "resource": "https://fonts.example-cdn.com/inter/v3/Inter-roman.var.woff2?v=3.19",
    "status": 0, "page": "/blog/2024/05/why-we-switched-to-postgres"})
add("misc-job-posting", "POST", "/api/jobs", json_body={
    "title": "Senior Node.js Engineer (m/f/d)", "location": "Remote (EU) / Berlin",
    "salary": {"min": 70000, "max": 90000, "currency": "EUR"},
    "description": "We're a 30-person team building payments for independent shops.\n\n**Stack:** Node.js, TypeScript, PostgreSQL, Redis, AWS (ECS, RDS, SQS).\n\n**You'll:** design APIs, review PRs, be on call 1 week in 6 (paid).\n\nNo leetcode. One take-home (max 3h, paid €300) & two conversations."})
add("misc-listing-apartment", "POST", "/api/listings", json_body={
    "title": "Bright 2-bed apt. near Stephen's Green", "rent": {"amount": 2450, "currency": "EUR", "period": "month"},
    "size_m2": 75, "floor": 3, "elevator": False, "available_from": "2024-07-01",
    "description": "2 bed / 1 bath, 75 m², 3rd floor (no lift). South-facing balcony. 5 min walk to the Luas. Bills not included; BER C1. No agencies please!"})
add("misc-recipe-create", "POST", "/api/recipes", json_body={
    "title": "Grandma's apple crumble", "servings": 6, "prep_minutes": 20, "cook_minutes": 40,
    "ingredients": ["1 kg Bramley apples", "1/2 cup (100 g) sugar", "1 tsp cinnamon", "150 g flour", "100 g cold butter, cubed", "75 g oats"],
    "steps": ["Preheat oven to 350°F (180°C).", "Peel, core & slice the apples; toss with half the sugar and the cinnamon.",
              "Rub the butter into the flour until it looks like breadcrumbs, then stir in the oats & remaining sugar.",
              "Scatter over the apples and bake 35–40 min until golden. Serve with custard!"]})
add("misc-legal-terms", "PUT", "/api/admin/pages/terms", json_body={
    "content": "1. Definitions\n\n\"Service\" means the online shop operated by Example Ltd. \"You\" means the person placing an order.\n\n2. Orders\n\nAll orders are subject to availability & confirmation of the order price. We may refuse an order for any reason, including where the price shown was incorrect (e.g. €1.00 instead of €100.00)."})
add("misc-survey-answer", "POST", "/api/surveys/sv_2024_q2/responses", json_body={
    "answers": {"nps": 9, "liked": "Fast delivery & the packaging is plastic-free 👏",
                "improve": "The app's search — it doesn't find things if I misspell them (e.g. 'expresso').",
                "role": "Owner / founder"}})
add("misc-contact-card", "POST", "/api/contacts", json_body={
    "first_name": "Kwame", "last_name": "Mensah", "company": "Mensah & Daughters Ltd.",
    "emails": [{"type": "work", "value": "kwame@mensah-daughters.example.gh"}],
    "phones": [{"type": "mobile", "value": "+233 24 555 0187"}],
    "birthday": "1984-02-29", "notes": "Met at the Accra fintech meetup — interested in the API for B2B invoicing."})
add("misc-medical-appointment", "POST", "/api/appointments", json_body={
    "patient_name": "Mary-Kate O'Neil", "date_of_birth": "1989-11-03", "reason": "Follow-up — blood pressure 135/85 last visit",
    "preferred_times": ["2024-06-17T09:00:00-04:00", "2024-06-18T14:30:00-04:00"]})
add("misc-expense", "POST", "/api/expenses", json_body={
    "merchant": "Café de l'Horloge", "amount": 18.40, "currency": "EUR", "date": "2024-05-14",
    "category": "meals", "note": "Lunch w/ client (2 pax) — re: Q3 renewal"})
add("misc-todo-create", "POST", "/api/todos", json_body={"title": "Renew domain before 2024-09-01 (!!)", "due": "2024-08-25", "labels": ["admin"]})
add("misc-todo-bulk", "PATCH", "/api/todos", json_body={"ids": [101, 102, 105], "done": True})
add("misc-iot-reading", "POST", "/api/devices/dev_0A1B2C/readings", json_body={
    "ts": "2024-05-15T10:00:00Z", "temperature_c": 21.4, "humidity_pct": 48.2, "co2_ppm": 612, "battery_v": 3.71})
add("misc-geojson", "POST", "/api/zones", json_body={
    "name": "Delivery zone — Dublin 2", "geometry": {"type": "Polygon", "coordinates": [[
        [-6.2650, 53.3440], [-6.2480, 53.3440], [-6.2480, 53.3330], [-6.2650, 53.3330], [-6.2650, 53.3440]]]}})
add("misc-json-patch", "PATCH", "/api/documents/doc_311", raw=js([
    {"op": "replace", "path": "/title", "value": "Q3 plan (draft 2)"},
    {"op": "add", "path": "/tags/-", "value": "planning"},
    {"op": "remove", "path": "/reviewers/1"}]), ctype="application/json")
add("misc-empty-json-post", "POST", "/api/carts", json_body={})
add("misc-nested-json", "PUT", "/api/admin/settings", json_body={
    "store": {"name": "Cáit's Corner Shop", "currency": "EUR", "locale": "en-IE",
              "tax": {"included_in_prices": True, "rates": [{"country": "IE", "standard": 23, "reduced": [13.5, 9]}]},
              "checkout": {"guest_checkout": True, "min_order": 10, "terms_url": "/legal/terms"}}})

# ------------------------------------------------- form-urlencoded bodies

add("form-newsletter", "POST", "/api/newsletter/subscribe", form={
    "email": "siobhan.obrien@example.ie", "name": "Siobhán O'Brien", "consent": "on", "lists": "weekly,offers"})
add("form-contact", "POST", "/api/contact", form={
    "name": "Marco D'Angelo", "email": "marco.dangelo@example.it", "subject": "Wholesale pricing?",
    "message": "Hi! We run a small café in Milan & would like to stock your coffee beans (1 kg bags, ~20/month). Do you offer trade prices? Grazie!"})
add("form-contact-2", "POST", "/api/contact", form={
    "name": "Ольга Смирнова", "email": "olga.smirnova@example.ru", "subject": "Доставка в Россию",
    "message": "Здравствуйте! Вы доставляете в Санкт-Петербург? Сколько стоит доставка?"})
add("form-contact-3", "POST", "/api/contact", form={
    "name": "李娜", "email": "li.na@example.cn", "subject": "发票问题", "message": "您好，我需要一张增值税发票，请问怎么申请？谢谢！"})
add("form-oauth-token", "POST", "/oauth/token", form={
    "grant_type": "authorization_code", "code": b64url(RNG.randbytes(24)),
    "redirect_uri": "https://app.example.com/auth/callback", "client_id": "cli_%s" % hexstr(8),
    "code_verifier": b64url(RNG.randbytes(32))})
add("form-oauth-refresh", "POST", "/oauth/token", form={
    "grant_type": "refresh_token", "refresh_token": b64url(RNG.randbytes(40)), "client_id": "cli_%s" % hexstr(8)})
add("form-login", "POST", "/api/login", form={
    "username": "mk.oneil@example.com", "password": "Tr0ub4dor&3", "remember": "1"})
add("form-login-2", "POST", "/api/login", form={
    "username": "renee.lheureux", "password": "érable-Sirop-2024!", "remember": "0"})
add("form-sms-webhook", "POST", "/api/webhooks/sms", form={
    "MessageSid": "SM%s" % hexstr(16), "From": "+15550100123", "To": "+15550100999",
    "Body": "Hi, is my order #4821 on the way? Thx", "NumMedia": "0"})
add("form-slash-command", "POST", "/api/integrations/chat/commands", form={
    "team_id": "T0001", "channel_name": "ops", "user_name": "lukasz", "command": "/status",
    "text": "checkout-api --since 1h", "response_url": "https://hooks.example.com/commands/T0001/123/abc"})
add("form-ipn", "POST", "/api/payments/ipn", form={
    "payment_status": "Completed", "mc_gross": "19.95", "mc_currency": "USD", "item_name": "Chef's Knife 8\"",
    "payer_email": "buyer@example.com", "txn_id": hexstr(8).upper(), "custom": "ord_20240511_0042"})
add("form-search", "POST", "/api/search", form={"q": "women's jacket", "category": "clothing", "sort": "price_asc"})
add("form-comment", "POST", "/api/blog/posts/why-we-switched-to-postgres/comments", form={
    "author": "Dan O'Connor-Smith", "email": "dan.ocs@example.co.uk",
    "comment": "Great post. We did the same migration last year; the hardest part was the MySQL `ON DUPLICATE KEY UPDATE` → `ON CONFLICT DO UPDATE` rewrite."})
add("form-feedback", "POST", "/api/feedback", form={
    "rating": "4", "page": "/checkout?step=payment", "text": "Apple Pay button didn't show on Safari 17 until I reloaded."})
add("form-address", "POST", "/api/checkout/address", form={
    "full_name": "Renée L'Heureux", "line1": "4520, rue Saint-Denis, app. 3", "city": "Montréal", "province": "QC",
    "postal_code": "H2J 2L3", "country": "CA", "phone": "+1 514-555-0147"})
add("form-rsvp", "POST", "/api/events/ev_summer-bbq/rsvp", form={
    "name": "Aoife Ní Bhriain", "guests": "2", "dietary": "1x vegetarian, 1x no nuts", "attending": "yes"})
add("form-unsubscribe", "POST", "/api/email/unsubscribe", form={"email": "zoe.angstrom@example.se", "list": "offers", "reason": "Too many emails"})
add("form-legacy-profile", "POST", "/api/legacy/profile", form=[
    ("first_name", "José María"), ("last_name", "García-López"), ("interests[]", "hiking"), ("interests[]", "photography"),
    ("interests[]", "cooking"), ("bio", "Me encanta la montaña 🏔️ & el buen café.")])
add("form-giftcard-check", "POST", "/api/gift-cards/balance", form={"code": "GIFT-7Q4K-9XPM-2B8T", "pin": "0417"})
add("form-report-issue", "POST", "/api/report", form={
    "url": "https://shop.example.com/p/prd_83kd92?variant=M-Navy", "issue": "Photo shows navy but the dropdown says 'Midnight'"})
add("form-empty-values", "POST", "/api/preferences", form={"newsletter": "", "sms": "", "theme": "system"})

# --------------------------------------------------- other methods, misc

add("misc-put-avatar-remove", "PUT", "/api/users/me/avatar", json_body={"image": None})
add("misc-patch-notification", "PATCH", "/api/notifications/n_99812", json_body={"read": True})
add("misc-put-order-note", "PUT", "/api/orders/ord_20240511_0042/note", json_body={
    "note": "Customer called: deliver to neighbour at No. 14 if nobody's in. Don't leave it on the step — it rained last time!"})
add("misc-patch-ticket-tags", "PATCH", "/api/support/tickets/t_7790", json_body={"tags": ["billing", "vat", "de"], "assignee": "helene.darcy"})
add("get-product", "GET", "/api/products/prd_83kd92", "")
add("get-product-expand", "GET", "/api/products/prd_83kd92", "expand=variants,reviews&currency=EUR&locale=fr-FR")
add("get-order", "GET", "/api/orders/ord_20240511_0042", "")
add("get-profile-unicode-path", "GET", "/api/users/by-username/%E7%8E%8B%E5%B0%8F%E6%98%8E", "")
add("get-tag-path", "GET", "/api/forum/tags/c%2B%2B/threads", "page=1")
add("get-file-download", "GET", "/api/files/download", qs({"path": "/Projects/Q3 Planning/budget v2 (final).xlsx"}))
add("get-blog-slug", "GET", "/api/blog/posts/why-we-switched-to-postgres", "")
add("get-invoice-pdf", "GET", "/api/invoices/INV-2024-0319.pdf", "")
add("get-locale-json", "GET", "/api/i18n/pt-BR.json", "v=20240515")
add("get-avatar-thumb", "GET", "/api/users/u_8812/avatar", "size=64&format=webp&dpr=2")
add("get-sitemap", "GET", "/api/sitemap", "lang=en&type=products")
add("get-compare", "GET", "/api/products/compare", "ids[]=prd_83kd92&ids[]=prd_1f0a77&ids[]=prd_a93kd1")
add("get-shipping-track", "GET", "/api/shipping/track", qs({"carrier": "dhl", "number": "JD014600006543210987"}))
add("get-timezone", "GET", "/api/time", qs({"tz": "America/Argentina/Buenos_Aires"}))
add("get-currency", "GET", "/api/fx", qs({"from": "EUR", "to": "JPY,GBP,USD", "amount": "49.99"}))
add("get-math", "GET", "/api/calculator", qs({"expr": "(12.5 * 4) + 3/2"}))
add("get-email-check", "GET", "/api/users/email-available", qs({"email": "o'hara.dmitri@example.com"}))
add("get-callback", "GET", "/api/auth/callback", qs({"code": b64url(RNG.randbytes(20)), "state": uid()}))
add("get-coupon-check", "GET", "/api/coupons/SUMMER%2724/check", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output file (default: %(default)s)")
    args = ap.parse_args()
    ids = [r["id"] for r in CORPUS]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        sys.exit("duplicate ids: %s" % ", ".join(dup))
    for r in CORPUS:
        assert r["method"] in ("GET", "POST", "PUT", "PATCH"), r["id"]
        assert r["method"] != "GET" or not r["body"], r["id"]
        # the request target goes on the wire as it is: printable ASCII, no spaces
        for part in (r["path"], r["query"]):
            assert all(33 <= ord(c) < 127 for c in part), (r["id"], part)
        if r["content_type"] == "application/json":
            json.loads(r["body"])  # every JSON body parses
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for r in CORPUS:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    by_method = {}
    for r in CORPUS:
        by_method[r["method"]] = by_method.get(r["method"], 0) + 1
    print("%d requests (%s) -> %s" % (
        len(CORPUS), ", ".join("%s %d" % kv for kv in sorted(by_method.items())), args.out))


if __name__ == "__main__":
    main()
