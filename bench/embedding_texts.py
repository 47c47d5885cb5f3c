"""The texts of the embedding checks: 20 code snippets, each with the one question it answers,
and a few plain sentences. Reference vectors for them are in tests/data (see
bench/embedding_reference.py); a retrieval check asks that each question's snippet rank first.
"""

from __future__ import annotations

PAIRS: list[tuple[str, str]] = [
    (
        "import json\n\ndef load_config(path):\n    with open(path, encoding='utf-8') as f:\n"
        "        return json.load(f)",
        "How do I read a JSON configuration file into a Python dictionary?",
    ),
    (
        "from functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)",
        "Memoize a recursive Fibonacci function so it doesn't recompute values",
    ),
    (
        "import time\nimport requests\n\ndef get_with_retry(url, attempts=3):\n"
        "    for i in range(attempts):\n        try:\n"
        "            return requests.get(url, timeout=5)\n"
        "        except requests.RequestException:\n            time.sleep(2 ** i)\n"
        "    raise RuntimeError('gave up')",
        "retry an HTTP GET request with exponential backoff when it fails",
    ),
    (
        "function debounce(fn, ms) {\n  let timer;\n  return (...args) => {\n"
        "    clearTimeout(timer);\n    timer = setTimeout(() => fn(...args), ms);\n  };\n}",
        "JavaScript: only call a handler after the user stops typing for a few milliseconds",
    ),
    (
        "const res = await fetch('/api/todos');\nconst todos = await res.json();\n"
        "const ul = document.querySelector('#list');\n"
        "ul.innerHTML = todos.map(t => `<li>${t.title}</li>`).join('');",
        "fetch a list of todos from an API and show them as list items on the page",
    ),
    (
        "SELECT c.name, SUM(o.amount) AS total\nFROM customers c\n"
        "JOIN orders o ON o.customer_id = c.id\nGROUP BY c.name\n"
        "ORDER BY total DESC\nLIMIT 5;",
        "SQL query for the five customers who spent the most money across their orders",
    ),
    (
        "CREATE TABLE users (\n  id SERIAL PRIMARY KEY,\n  email TEXT NOT NULL,\n"
        "  created_at TIMESTAMPTZ DEFAULT now()\n);\n"
        "CREATE UNIQUE INDEX users_email_idx ON users (email);",
        "create a users table where no two rows can have the same email address",
    ),
    (
        "find / -xdev -type f -size +100M -exec ls -lh {} \\; 2>/dev/null | sort -k5 -h",
        "list every file bigger than 100 megabytes on the disk, sorted by size",
    ),
    (
        'tar -czf "backup-$(date +%Y-%m-%d).tar.gz" -C /var/www html',
        "make a compressed archive of the website folder with today's date in the file name",
    ),
    (
        "def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n"
        "    while lo <= hi:\n        mid = (lo + hi) // 2\n"
        "        if items[mid] == target:\n            return mid\n"
        "        if items[mid] < target:\n            lo = mid + 1\n        else:\n"
        "            hi = mid - 1\n    return -1",
        "find the index of a value in a sorted list in logarithmic time",
    ),
    (
        "import re\n\nEMAIL = re.compile(r'^[\\w.+-]+@[\\w-]+\\.[\\w.-]+$')\n\n"
        "def is_valid_email(s):\n    return EMAIL.match(s) is not None",
        "check with a regular expression whether a string looks like an email address",
    ),
    (
        'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n)\n\nfunc main() {\n'
        '\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {\n'
        '\t\tfmt.Fprintln(w, "hello")\n\t})\n\thttp.ListenAndServe(":8080", nil)\n}',
        "a minimal Go web server that answers hello on port 8080",
    ),
    (
        "use std::collections::HashMap;\nuse std::fs;\n\nfn main() {\n"
        '    let text = fs::read_to_string("input.txt").unwrap();\n'
        "    let mut counts: HashMap<&str, usize> = HashMap::new();\n"
        "    for word in text.split_whitespace() {\n"
        "        *counts.entry(word).or_insert(0) += 1;\n    }\n"
        '    println!("{:?}", counts);\n}',
        "Rust program that counts how many times each word appears in a text file",
    ),
    (
        "import asyncio\nimport aiohttp\n\nasync def fetch_all(urls):\n"
        "    async with aiohttp.ClientSession() as session:\n"
        "        async def one(u):\n            async with session.get(u) as r:\n"
        "                return await r.text()\n"
        "        return await asyncio.gather(*(one(u) for u in urls))",
        "download many web pages concurrently with asyncio",
    ),
    (
        "const express = require('express');\nconst app = express();\n"
        "app.use(express.json());\napp.post('/users', (req, res) => {\n"
        "  const { name } = req.body;\n  res.status(201).json({ id: Date.now(), name });\n});\n"
        "app.listen(3000);",
        "Express endpoint that accepts a POST with a JSON body and returns 201 Created",
    ),
    (
        "import sqlite3\n\nconn = sqlite3.connect('app.db')\n"
        "conn.execute('CREATE TABLE IF NOT EXISTS events (name TEXT, ts REAL)')\n"
        "conn.executemany('INSERT INTO events VALUES (?, ?)', rows)\nconn.commit()",
        "insert many rows into a SQLite database at once from Python",
    ),
    (
        "git branch --merged main | grep -v '^\\*\\|main' | xargs -r git branch -d",
        "delete the local git branches that have already been merged into main",
    ),
    (
        "FROM python:3.12-slim\nWORKDIR /app\nCOPY requirements.txt .\n"
        "RUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\n"
        'CMD ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]',
        "container image definition for a Python web app served by gunicorn",
    ),
    (
        "import csv\n\nwith open('sales.csv', newline='') as f:\n"
        "    rows = list(csv.DictReader(f))\n"
        "average = sum(float(r['price']) for r in rows) / len(rows)\nprint(average)",
        "compute the mean of the price column in a CSV spreadsheet",
    ),
    (
        "import hashlib\n\ndef file_sha256(path):\n    h = hashlib.sha256()\n"
        "    with open(path, 'rb') as f:\n"
        "        for block in iter(lambda: f.read(1 << 20), b''):\n            h.update(block)\n"
        "    return h.hexdigest()",
        "hash a large file with SHA-256 without loading it all into memory",
    ),
]

SENTENCES: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "A cup of hot tea on a rainy afternoon.",
    "The train to Edinburgh leaves from platform four at nine o'clock.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "She finished the marathon in just under four hours.",
]
