//! Names, titles and company parts the seeding benchmarks draw records from: weighted
//! cultures with their own scripts, so data looks like a real international tenant's.

/// One group of names: how often it occurs, its calling code, first and last names as
/// "shown|ascii" (ascii for e-mail addresses; derived when absent).
pub struct Culture {
    pub weight: u32,
    pub calling_code: &'static str,
    pub first: &'static str,
    pub last: &'static str,
}

#[rustfmt::skip]
pub const CULTURES: &[Culture] = &[
    Culture { weight: 2830, calling_code: "1",
        first: "James,Mary,John,Patricia,Robert,Jennifer,Michael,Linda,William,Elizabeth,David,Barbara,Richard,Susan,Joseph,Jessica,Thomas,Sarah,Charles,Karen,Christopher,Nancy,Daniel,Lisa,Matthew,Betty,Anthony,Margaret,Mark,Sandra,Emily,Olivia,Liam,Noah,Emma,Ava,Sophia,Isabella,Ethan,Mason,Harper,Amelia,Oliver,Charlotte,Jack,Grace,Harry,Chloe,George,Lucy",
        last: "Smith,Johnson,Williams,Brown,Jones,Miller,Davis,Wilson,Anderson,Taylor,Thomas,Moore,Jackson,Martin,Thompson,White,Harris,Clark,Lewis,Robinson,Walker,Young,Allen,King,Wright,Scott,Hill,Green,Adams,Baker,Nelson,Carter,Mitchell,Roberts,Turner,Phillips,Campbell,Parker,Evans,Edwards,Collins,Stewart,Morris,Murphy,Cook,Rogers,Morgan,Cooper,Peterson,Reed,O'Brien,O'Connor,MacDonald,Fitzgerald,Sullivan" },
    Culture { weight: 800, calling_code: "49",
        first: "Lukas,Leon,Finn,Jonas,Paul,Felix,Maximilian,Elias,Moritz,Tobias,Jürgen|juergen,Uwe,Dieter,Klaus,Wolfgang,Sabine,Ursula,Katrin,Anna,Lena,Lea,Hannah,Mia,Sophie,Marie,Johanna,Greta,Frieda,Jörg|joerg,Sören|soeren,Anke,Birgit",
        last: "Müller|mueller,Schmidt,Schneider,Fischer,Weber,Meyer,Wagner,Becker,Schulz,Hoffmann,Schäfer|schaefer,Koch,Bauer,Richter,Klein,Wolf,Schröder|schroeder,Neumann,Schwarz,Zimmermann,Braun,Krüger|krueger,Hofmann,Hartmann,Lange,Schmitt,Werner,Krause,Meier,Lehmann,Köhler|koehler,Großmann|grossmann" },
    Culture { weight: 600, calling_code: "33",
        first: "Jean,Pierre,Louis,Hugo,Lucas,Jules,Gabriel,Arthur,Théo|theo,Raphaël|raphael,Camille,Léa|lea,Manon,Chloé|chloe,Inès|ines,Jade,Louise,Zoé|zoe,Élodie|elodie,Amélie|amelie,Océane|oceane,Benoît|benoit,François|francois,Hélène|helene",
        last: "Martin,Bernard,Dubois,Thomas,Robert,Richard,Petit,Durand,Leroy,Moreau,Simon,Laurent,Lefèvre|lefevre,Michel,Garcia,David,Bertrand,Roux,Vincent,Fournier,Morel,Girard,André|andre,Lefebvre,Mercier,Dupont,Lambert,Bonnet,François|francois,Martinez,Chevalier" },
    Culture { weight: 1000, calling_code: "34",
        first: "José|jose,María|maria,Juan,Carmen,Antonio,Lucía|lucia,Manuel,Sofía|sofia,Francisco,Valentina,Javier,Camila,Alejandro,Martina,Diego,Daniela,Carlos,Paula,Miguel,Elena,Sergio,Ximena,Mateo,Renata,Andrés|andres,Begoña|begona,Íñigo|inigo,Nuria,Rocío|rocio,Guillermo",
        last: "García|garcia,Rodríguez|rodriguez,González|gonzalez,Fernández|fernandez,López|lopez,Martínez|martinez,Sánchez|sanchez,Pérez|perez,Gómez|gomez,Martín|martin,Jiménez|jimenez,Ruiz,Hernández|hernandez,Díaz|diaz,Moreno,Muñoz|munoz,Álvarez|alvarez,Romero,Alonso,Gutiérrez|gutierrez,Navarro,Torres,Domínguez|dominguez,Vázquez|vazquez,Ramos,Castillo,Ortega,Rubio,Morales,Castro,Ibáñez|ibanez,Peña|pena" },
    Culture { weight: 400, calling_code: "39",
        first: "Francesco,Alessandro,Lorenzo,Matteo,Leonardo,Andrea,Giuseppe,Marco,Giovanni,Luca,Giulia,Chiara,Francesca,Sara,Martina,Aurora,Alessia,Federica,Niccolò|niccolo,Ilaria",
        last: "Rossi,Russo,Ferrari,Esposito,Bianchi,Romano,Colombo,Ricci,Marino,Greco,Bruno,Gallo,Conti,De Luca,Mancini,Costa,Giordano,Rizzo,Lombardi,Moretti,Barbieri,Fontana,Santoro,Mariani" },
    Culture { weight: 500, calling_code: "55",
        first: "João|joao,Pedro,Gustavo,Rafael,Lucas,Thiago,Bruno,Felipe,Ana,Beatriz,Júlia|julia,Larissa,Fernanda,Gabriela,Letícia|leticia,Mariana,Conceição|conceicao,Sebastião|sebastiao",
        last: "Silva,Santos,Oliveira,Souza,Rodrigues,Ferreira,Alves,Pereira,Lima,Gomes,Ribeiro,Carvalho,Almeida,Lopes,Soares,Fernandes,Vieira,Barbosa,Rocha,Dias,Nascimento,Araújo|araujo,Magalhães|magalhaes,Gonçalves|goncalves" },
    Culture { weight: 200, calling_code: "31",
        first: "Daan,Sem,Bram,Lars,Thijs,Sanne,Fleur,Lotte,Femke,Maaike,Joost,Pieter",
        last: "de Jong,Jansen,de Vries,van den Berg,van Dijk,Bakker,Janssen,Visser,Smit,Meijer,de Boer,Mulder,de Groot,Bos,Vos,Peters,Hendriks,van Leeuwen" },
    Culture { weight: 200, calling_code: "46",
        first: "Erik,Lars,Anders,Johan,Nils,Magnus,Astrid,Ingrid,Sigrid,Freja,Åsa|asa,Björn|bjorn,Sølvi|solvi,Kjersti",
        last: "Andersson,Johansson,Karlsson,Nilsson,Eriksson,Larsson,Olsen,Hansen,Nielsen,Jensen,Lindqvist,Bergström|bergstrom,Sjöberg|sjoberg,Haugen,Øberg|oberg,Lund" },
    Culture { weight: 300, calling_code: "48",
        first: "Jakub,Kacper,Szymon,Wojciech,Piotr,Krzysztof,Zofia,Zuzanna,Maja,Agnieszka,Małgorzata|malgorzata,Łukasz|lukasz,Paweł|pawel,Katarzyna",
        last: "Nowak,Kowalski,Wiśniewski|wisniewski,Wójcik|wojcik,Kowalczyk,Kamiński|kaminski,Lewandowski,Zieliński|zielinski,Szymański|szymanski,Woźniak|wozniak,Dąbrowski|dabrowski,Kozłowski|kozlowski,Jankowski,Mazur,Krawczyk" },
    Culture { weight: 400, calling_code: "7",
        first: "Александр|aleksandr,Дмитрий|dmitry,Максим|maksim,Сергей|sergey,Андрей|andrey,Алексей|aleksey,Иван|ivan,Михаил|mikhail,Анна|anna,Мария|maria,Елена|elena,Ольга|olga,Наталья|natalya,Екатерина|ekaterina,Татьяна|tatyana,Ирина|irina,Светлана|svetlana,Юлия|yulia",
        last: "Иванов|ivanov,Смирнов|smirnov,Кузнецов|kuznetsov,Попов|popov,Васильев|vasiliev,Петров|petrov,Соколов|sokolov,Михайлов|mikhailov,Новиков|novikov,Фёдоров|fedorov,Морозов|morozov,Волков|volkov,Алексеев|alekseev,Лебедев|lebedev,Семёнов|semenov,Егоров|egorov,Павлов|pavlov,Козлов|kozlov,Степанов|stepanov,Николаев|nikolaev" },
    Culture { weight: 150, calling_code: "380",
        first: "Олександр|oleksandr,Андрій|andrii,Богдан|bohdan,Тарас|taras,Оксана|oksana,Ірина|iryna,Наталія|nataliia,Олена|olena,Юрій|yurii,Ганна|hanna",
        last: "Шевченко|shevchenko,Коваленко|kovalenko,Бондаренко|bondarenko,Ткаченко|tkachenko,Кравченко|kravchenko,Олійник|oliinyk,Шевчук|shevchuk,Поліщук|polishchuk,Мельник|melnyk,Бойко|boiko" },
    Culture { weight: 100, calling_code: "30",
        first: "Γιώργος|giorgos,Κωνσταντίνος|konstantinos,Δημήτρης|dimitris,Νίκος|nikos,Μαρία|maria,Ελένη|eleni,Αικατερίνη|aikaterini,Σοφία|sofia",
        last: "Παπαδόπουλος|papadopoulos,Παππάς|pappas,Οικονόμου|oikonomou,Γεωργίου|georgiou,Βασιλείου|vasileiou,Νικολάου|nikolaou,Καραγιάννης|karagiannis,Μαυρίδης|mavridis" },
    Culture { weight: 200, calling_code: "90",
        first: "Mehmet,Mustafa,Ahmet,Ali,Hüseyin|huseyin,Emre,Burak,Elif,Zeynep,Ayşe|ayse,Fatma,Emine,Özlem|ozlem,Çağrı|cagri",
        last: "Yılmaz|yilmaz,Kaya,Demir,Şahin|sahin,Çelik|celik,Yıldız|yildiz,Yıldırım|yildirim,Öztürk|ozturk,Aydın|aydin,Özdemir|ozdemir,Arslan,Doğan|dogan,Kılıç|kilic,Aslan" },
    Culture { weight: 200, calling_code: "971",
        first: "محمد|mohammed,أحمد|ahmed,علي|ali,عمر|omar,خالد|khaled,يوسف|youssef,فاطمة|fatima,مريم|mariam,نور|nour,ليلى|layla,سارة|sara,عائشة|aisha",
        last: "العلي|alali,الحسن|alhassan,الخطيب|alkhatib,المنصور|almansour,الشمري|alshammari,حداد|haddad,عبدالله|abdullah,الزهراني|alzahrani,القحطاني|alqahtani,السعيد|alsaeed" },
    Culture { weight: 200, calling_code: "20",
        first: "Mohamed,Ahmed,Mahmoud,Karim,Tarek,Youssef,Hassan,Amira,Yasmin,Salma,Nadia,Rania",
        last: "Hassan,Ibrahim,Mahmoud,Mostafa,El-Sayed,Abdel-Rahman,Farouk,Nasser,Khalil,Haddad,Saleh,Mansour" },
    Culture { weight: 50, calling_code: "972",
        first: "נועם|noam,אורי|uri,יונתן|yonatan,דוד|david,תמר|tamar,מיכל|michal,נועה|noa,שירה|shira",
        last: "כהן|cohen,לוי|levi,מזרחי|mizrahi,פרץ|peretz,ביטון|biton,אברהם|avraham,פרידמן|friedman,שפירא|shapira" },
    Culture { weight: 500, calling_code: "91",
        first: "Aarav,Vivaan,Aditya,Arjun,Rohan,Rahul,Vikram,Sanjay,Priya,Ananya,Diya,Kavya,Aishwarya,Deepika,Lakshmi,Sneha,Karthik,Venkatesh",
        last: "Sharma,Verma,Gupta,Patel,Singh,Kumar,Reddy,Iyer,Nair,Menon,Rao,Joshi,Desai,Mehta,Chatterjee,Banerjee,Mukherjee,Pillai,Krishnan,Bhattacharya" },
    Culture { weight: 50, calling_code: "91",
        first: "आरव|aarav,अर्जुन|arjun,राहुल|rahul,प्रिया|priya,अनन्या|ananya,दिव्या|divya",
        last: "शर्मा|sharma,वर्मा|verma,गुप्ता|gupta,सिंह|singh,कुमार|kumar,मिश्रा|mishra" },
    Culture { weight: 300, calling_code: "86",
        first: "伟|wei,芳|fang,娜|na,敏|min,静|jing,丽|li,强|qiang,磊|lei,军|jun,洋|yang,勇|yong,艳|yan,杰|jie,娟|juan,涛|tao,明|ming,超|chao,秀英|xiuying,建华|jianhua,志强|zhiqiang",
        last: "王|wang,李|li,张|zhang,刘|liu,陈|chen,杨|yang,黄|huang,赵|zhao,吴|wu,周|zhou,徐|xu,孙|sun,马|ma,朱|zhu,胡|hu,郭|guo,何|he,林|lin,罗|luo,高|gao" },
    Culture { weight: 200, calling_code: "86",
        first: "Wei,Fang,Xiaoming,Jing,Lei,Yan,Hui,Ying,Jun,Hao,Mei,Xin,Yifan,Zihan",
        last: "Wang,Li,Zhang,Liu,Chen,Yang,Huang,Zhao,Wu,Zhou,Xu,Sun,Ma,Zhu,Lin,Guo" },
    Culture { weight: 200, calling_code: "81",
        first: "陽翔|haruto,蓮|ren,大翔|hiroto,悠真|yuma,湊|minato,結菜|yuna,陽葵|himari,凛|rin,さくら|sakura,美咲|misaki,健太|kenta,翔太|shota,由美|yumi,恵子|keiko",
        last: "佐藤|sato,鈴木|suzuki,高橋|takahashi,田中|tanaka,伊藤|ito,渡辺|watanabe,山本|yamamoto,中村|nakamura,小林|kobayashi,加藤|kato,吉田|yoshida,山田|yamada,佐々木|sasaki,山口|yamaguchi,松本|matsumoto" },
    Culture { weight: 150, calling_code: "82",
        first: "민준|minjun,서준|seojun,도윤|doyun,예준|yejun,서연|seoyeon,서윤|seoyun,지우|jiwoo,하은|haeun,지민|jimin,수빈|subin",
        last: "김|kim,이|lee,박|park,최|choi,정|jung,강|kang,조|cho,윤|yoon,장|jang,임|lim" },
    Culture { weight: 150, calling_code: "84",
        first: "Anh,Minh,Huy,Khang,Bảo|bao,Phúc|phuc,Linh,Ngọc|ngoc,Thảo|thao,Trang,Hương|huong,Dũng|dung",
        last: "Nguyễn|nguyen,Trần|tran,Lê|le,Phạm|pham,Hoàng|hoang,Huỳnh|huynh,Phan,Vũ|vu,Võ|vo,Đặng|dang,Bùi|bui,Đỗ|do" },
    Culture { weight: 200, calling_code: "234",
        first: "Chinedu,Emeka,Oluwaseun,Tunde,Ifeanyi,Chiamaka,Ngozi,Adaeze,Folake,Yetunde,Kwame,Kofi,Ama,Abena",
        last: "Okafor,Okonkwo,Adeyemi,Balogun,Eze,Nwosu,Obi,Adebayo,Ogunleye,Mensah,Asante,Boateng,Owusu,Chukwu" },
    Culture { weight: 100, calling_code: "254",
        first: "Wanjiru,Achieng,Otieno,Kamau,Njeri,Baraka,Amani,Zawadi,Juma,Neema",
        last: "Mwangi,Kamau,Otieno,Odhiambo,Wanjiku,Kiprop,Chebet,Mutua,Njoroge,Kipchoge" },
    Culture { weight: 20, calling_code: "354",
        first: "Guðrún|gudrun,Sigríður|sigridur,Jón|jon,Ólafur|olafur,Einar,Katrín|katrin",
        last: "Jónsdóttir|jonsdottir,Sigurðsson|sigurdsson,Guðmundsdóttir|gudmundsdottir,Þórsson|thorsson,Magnúsdóttir|magnusdottir,Kristjánsson|kristjansson" },
];

pub const TITLES: &str = "CEO,CTO,CFO,COO,Founder,Co-Founder,Managing Director,Vice President of Sales,VP Engineering,Head of Marketing,Head of Procurement,Sales Manager,Account Executive,Account Manager,Business Development Manager,Marketing Manager,Product Manager,Project Manager,Operations Manager,Office Manager,Purchasing Manager,Software Engineer,Senior Software Engineer,Data Analyst,IT Director,HR Manager,Recruiter,Financial Controller,Accountant,Legal Counsel,Customer Success Manager,Support Lead,Consultant,Partner,Assistant,Geschäftsführer,Directeur commercial,Responsable achats,Director de ventas,営業部長,Технический директор";
pub const FREE_MAIL: &str = "gmail.com,outlook.com,yahoo.com,hotmail.com,icloud.com,proton.me,gmx.de,web.de,mail.ru,yandex.ru,qq.com,163.com,naver.com,orange.fr,libero.it";
pub const STEMS: &str = "Northwind,Blue Harbor,Aurora,Summit,Evergreen,Silverline,Redwood,Brightpath,Ironbridge,Cedar,Falcon,Horizon,Keystone,Lighthouse,Meridian,Nimbus,Orion,Pinnacle,Quantum,Riverstone,Sterling,Trident,Unity,Vanguard,Willow,Zenith,Nordwind,Alpenblick,Rheinland,Sonnenberg,Lumière|lumiere,Soleil,Étoile|etoile,Sol y Mar,Andina,Pampa,Tierra,Ipanema,Amazonia,Tulipa,Vasa,Fjord,Baltic,Wisła|wisla,Волга|volga,Сибирь|sibir,Δέλτα|delta,Anadolu,النخيل|alnakheel,Nile,Ganga,Lotus,长城|changcheng,华夏|huaxia,富士|fuji,桜|sakura,한강|hangang,Mekong,Kilimanjaro,Sahara";
pub const SECTORS: &str = "Logistics,Systems,Foods,Energy,Consulting,Capital,Health,Software,Motors,Textiles,Pharma,Labs,Media,Retail,Holdings,Partners,Analytics,Robotics,Construction,Travel";
pub const SUFFIXES: &str =
    "Inc.,Ltd,GmbH,S.A.,SARL,S.p.A.,B.V.,AB,LLC,Pty Ltd,K.K.,Co. Ltd,AG,Oy,Sp. z o.o.,A.Ş.,Ltda.";
pub const TLDS: &str =
    ".com,.com,.com,.io,.de,.co.uk,.fr,.es,.it,.com.br,.nl,.se,.pl,.co.jp,.in,.cn";
pub const INDUSTRIES: &str = "Software,Manufacturing,Retail,Healthcare,Financial Services,Insurance,Logistics,Energy,Telecommunications,Education,Hospitality,Construction,Real Estate,Media,Automotive,Pharmaceuticals,Agriculture,Consulting,Government,Non-profit";

/// The entries of a comma-separated list.
pub fn list(csv: &str) -> Vec<&str> {
    csv.split(',').collect()
}
